"""The three training recipes: initialisation, loss, per-step constraints and final folding.

All three share one forward pass written for speed on CPU and GPU: the pre-encoder bias is
folded into the encoder bias (pre = x W_enc + (b_enc − b_dec W_enc)), so the backward pass
needs no gradient with respect to the input — five [B × d_in × d_sae] matrix products per
step (two forward, three backward) instead of six. Under bf16 autocast the big [B, d_sae]
tensors stay bf16; only [B, d_in] and [d_sae] tensors are float32.

Recipes train in their own units (2024 and topk scale the inputs by one scalar s); `fold`
returns a Dictionary in model units with unit-norm decoder rows, whose feature activation is
the norm of the feature's write in model units (f_i ‖W_dec,i‖ / s).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from featurewatch.training.dictionary import Dictionary
from featurewatch.training.geometric_median import geometric_median
from featurewatch.training.sae_config import SaeConfig


class LossOut(NamedTuple):
    """One step's loss and what the trainer tracks from it."""

    loss: torch.Tensor
    """Scalar to back-propagate."""
    err: torch.Tensor
    """x̂ − x [B, d_in] float32 in training units (detached)."""
    fired: torch.Tensor
    """[d_sae] bool: features that were non-zero on some row of the batch."""
    l0: torch.Tensor | None
    """Mean active features per row, when stats were asked for."""
    parts: dict[str, torch.Tensor]
    """Named loss terms (detached), for the history."""


def encoder_bias(d: Dictionary, pre_bias: bool) -> torch.Tensor:
    """The encoder bias; with `pre_bias`, b_enc − b_dec W_enc (x − b_dec folded into it)."""
    return d.b_enc - d.b_dec @ d.W_enc if pre_bias else d.b_enc


def encoder_pre(d: Dictionary, x: torch.Tensor, pre_bias: bool) -> torch.Tensor:
    """Encoder pre-activations; with `pre_bias`, of x − b_dec (folded into the bias)."""
    return torch.addmm(encoder_bias(d, pre_bias), x, d.W_enc)


def remove_parallel_grad(w: torch.Tensor) -> None:
    """Remove from w.grad each row's component parallel to that row of w (in place)."""
    if w.grad is None:
        return
    along = (w.grad * w).sum(dim=1, keepdim=True) / (w * w).sum(dim=1, keepdim=True)
    w.grad.sub_(along * w)


@torch.no_grad()
def renormalise_rows(w: torch.Tensor) -> None:
    """Scale every row of w to unit norm (in place)."""
    w.div_(torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(1e-12))


def random_directions(n: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """n unit vectors [n, d] uniformly distributed on the sphere."""
    v = torch.randn(n, d, generator=gen)
    return v / torch.linalg.vector_norm(v, dim=1, keepdim=True)


def warmup_fraction(step: int, steps: int, fraction: float) -> float:
    """Linear ramp 0 → 1 over the first `fraction` of the run (1 if fraction is 0)."""
    ramp = fraction * steps
    return 1.0 if ramp <= 0 else min(1.0, step / ramp)


class Recipe:
    """Base: unit-norm decoder, pre-encoder bias at the geometric median, no input scaling."""

    pre_bias = True
    unit_norm = True
    scale_inputs = False
    fold_norms = False
    architecture = "standard"

    def __init__(self, cfg: SaeConfig, d_in: int) -> None:
        self.cfg, self.d_in = cfg, d_in

    def build_empty(self) -> Dictionary:
        """A dictionary of this recipe's shape (weights to be loaded or initialised)."""
        return Dictionary(self.d_in, self.cfg.d_sae, self.architecture,
                          self.cfg.k if self.architecture == "topk" else None)

    def build(self, sample: torch.Tensor, gen: torch.Generator) -> Dictionary:
        """A freshly initialised dictionary (sample: training-unit rows for b_dec)."""
        d = self.build_empty()
        with torch.no_grad():
            self.init_weights(d, gen)
            if self.pre_bias:
                d.b_dec.copy_(geometric_median(sample))
        return d

    def init_weights(self, d: Dictionary, gen: torch.Generator) -> None:
        """Decoder rows: random unit directions; encoder: their transpose; b_enc = 0."""
        d.W_dec.copy_(random_directions(d.d_sae, d.d_in, gen))
        d.W_enc.copy_(d.W_dec.T)
        d.b_enc.zero_()

    def sparsity_coefficient(self, step: int) -> float:
        """λ at `step` (after warm-up)."""
        cfg = self.cfg
        return cfg.l1_coefficient * warmup_fraction(step, cfg.steps, cfg.l1_warmup)

    def loss(self, d: Dictionary, x: torch.Tensor, step: int, dead: torch.Tensor,
             stats: bool = False) -> LossOut:
        raise NotImplementedError

    def before_step(self, d: Dictionary) -> None:
        """Gradient surgery between backward() and optimizer.step()."""
        if self.unit_norm:
            remove_parallel_grad(d.W_dec)

    def after_step(self, d: Dictionary) -> None:
        """Re-impose constraints after optimizer.step()."""
        if self.unit_norm:
            renormalise_rows(d.W_dec)

    @torch.no_grad()
    def fold(self, d: Dictionary, scale: float) -> Dictionary:
        """The dictionary in model units (see the module docstring)."""
        w_enc, b_enc = d.W_enc.double(), d.b_enc.double()
        w_dec, b_dec = d.W_dec.double(), d.b_dec.double()
        if not self.pre_bias:  # f = σ(x W + b) equals σ((x − b_dec) W + b + b_dec W)
            b_enc = b_enc + b_dec @ w_enc
        norms = torch.ones_like(b_enc)
        if self.fold_norms:
            norms = torch.linalg.vector_norm(w_dec, dim=1)
            norms = torch.where(norms > 0, norms, torch.ones_like(norms))
        out = Dictionary(d.d_in, d.d_sae, d.architecture, d.k).to(d.b_enc.device)
        out.W_enc.copy_(w_enc * norms)
        out.b_enc.copy_(b_enc * norms / scale)
        out.W_dec.copy_(w_dec / norms[:, None])
        out.b_dec.copy_(b_dec / scale)
        return out


_MKLDNN_LINEAR = (getattr(torch.ops.mkldnn, "_linear_pointwise", None)
                  if torch.backends.mkldnn.is_available() else None)


def _linear(x: torch.Tensor, weight_t: torch.Tensor, bias: torch.Tensor | None,
            relu: bool = False) -> torch.Tensor:
    """x @ weight_t.T (+ bias) (then ReLU), with bias and ReLU fused into the product.

    With d_in = 512 a product does ~1000 FLOPs per [B, d_sae] element it writes, so a separate
    pass over that tensor costs about half as much as the product on an AMX CPU (measured;
    by the FLOP/byte ratio, on a GPU too): oneDNN's epilogue on CPU bf16, cuBLASLt's on CUDA
    (`_addmm_activation`), plain addmm otherwise.
    """
    if x.device.type == "cpu" and _MKLDNN_LINEAR is not None and x.dtype == torch.bfloat16:
        return _MKLDNN_LINEAR(x, weight_t.contiguous(), bias, "relu" if relu else "none", [],
                              "")
    if bias is None:
        out = x @ weight_t.T
        return out.relu_() if relu else out
    if relu:  # cuBLASLt's bias + ReLU epilogue on CUDA; addmm then relu elsewhere
        return torch._addmm_activation(bias, x, weight_t.T)
    return torch.addmm(bias, x, weight_t.T)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype autocast would run products in on x's device (x's own dtype without it)."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _transposed(t: torch.Tensor, dtype: torch.dtype, ones_row: bool = False) -> torch.Tensor:
    """t.T as a contiguous `dtype` tensor, in one copy; with `ones_row`, a row of ones below.

    (x.T with a ones row) @ g gives x.T @ g and g's column sums in one product, cheaper
    than a separate pass over a [B, d_sae] g.
    """
    if not ones_row:
        return t.T.to(dtype, memory_format=torch.contiguous_format)
    out = torch.empty((t.shape[1] + 1, t.shape[0]), dtype=dtype, device=t.device)
    out[:-1].copy_(t.T)
    out[-1] = 1
    return out


class ReluCoder(torch.autograd.Function):
    """(x̂, Σ_rows f, f) with f = ReLU(x W_enc + b), x̂ = f W_dec + b_dec, backward by hand.

    Written out for speed: autograd's version makes six passes over [B, d_sae] tensors
    besides the products, this one two (f's column sums and ReLU's backward). The sparsity
    term's gradient (a constant per feature) rides in the bias of the product giving ∂L/∂f,
    ReLU and biases are fused into the products, b_enc's gradient comes out of W_enc's
    product (`_transposed` with a ones row), and the weight gradients take their small
    operand pre-transposed (x.T @ g with x.T a strided view ran at ~60% of the speed).
    Computes in `dtype` (bf16 under autocast); gradients come back in the inputs' dtypes.
    """

    @staticmethod
    def forward(ctx, x, w_enc, b_enc, w_dec, b_dec, dtype):
        with torch.autocast(x.device.type, enabled=False):
            w_enc_t, w_dec_c = _transposed(w_enc, dtype), w_dec.to(dtype)
            f = _linear(x.to(dtype), w_enc_t, b_enc.to(dtype), relu=True)
            x_hat = _linear(f, w_dec_c.T, b_dec.to(dtype))
            # Sum in f's dtype (accumulates in float32 inside): asking for a float32 result
            # makes a float32 copy of all of f first, ~6x slower on CPU.
            f_sum = f.sum(dim=0).float()
        ctx.save_for_backward(_transposed(x, dtype, ones_row=True), w_enc_t, w_dec_c, f)
        ctx.dtypes = (x.dtype, w_enc.dtype, b_enc.dtype, w_dec.dtype, b_dec.dtype)
        ctx.mark_non_differentiable(f)
        ctx.set_materialize_grads(False)  # f's gradient would be a [B, d_sae] tensor of zeros
        return x_hat, f_sum, f

    @staticmethod
    def backward(ctx, g_xhat, g_fsum, _g_f):
        x1_t, w_enc_t, w_dec_c, f = ctx.saved_tensors
        need, dtypes = ctx.needs_input_grad, ctx.dtypes
        if g_xhat is None:
            g_xhat = torch.zeros(w_enc_t.shape[1], f.shape[0], device=f.device)
        with torch.autocast(f.device.type, enabled=False):
            g_f = _linear(g_xhat.to(f.dtype), w_dec_c,
                          None if g_fsum is None else g_fsum.to(f.dtype))
            g_pre = torch.ops.aten.threshold_backward(g_f, f, 0)
            enc = x1_t @ g_pre if need[1] or need[2] else None  # [d_in + 1, d_sae]
            g_w_dec = None
            if need[3]:  # [d_in, d_sae] product, transposed while cast back: one copy
                g_w_dec = torch.empty(w_dec_c.shape, dtype=dtypes[3], device=f.device)
                g_w_dec.copy_((_transposed(g_xhat, f.dtype) @ f).T)
            grads = (g_pre @ w_enc_t if need[0] else None,
                     enc[:-1] if need[1] else None,
                     enc[-1] if need[2] else None,
                     g_w_dec,
                     g_xhat.sum(dim=0) if need[4] else None)
        return (*(None if g is None else g.to(t) for g, t in zip(grads, dtypes, strict=True)), None)


def _relu_parts(d: Dictionary, x: torch.Tensor, pre_bias: bool, stats: bool):
    x_hat, f_sum, f = ReluCoder.apply(x, d.W_enc, encoder_bias(d, pre_bias), d.W_dec, d.b_dec,
                                      _compute_dtype(x))
    err = x_hat.float() - x
    l0 = (f > 0).sum(dtype=torch.float32) / x.shape[0] if stats else None
    return err, f_sum, l0


class Relu2023(Recipe):
    """[TM]: MSE (mean over elements) + λ‖f‖₁; resampling is done by the trainer."""

    def init_weights(self, d: Dictionary, gen: torch.Generator) -> None:
        # Untied, PyTorch's default (nn.Linear) Kaiming-uniform bounds, decoder rows unit norm.
        d.W_enc.uniform_(-1 / math.sqrt(d.d_in), 1 / math.sqrt(d.d_in), generator=gen)
        d.W_dec.uniform_(-1 / math.sqrt(d.d_sae), 1 / math.sqrt(d.d_sae), generator=gen)
        renormalise_rows(d.W_dec)
        d.b_enc.zero_()

    def loss(self, d, x, step, dead, stats=False):
        err, f_sum, l0 = _relu_parts(d, x, True, stats)
        mse = err.pow(2).mean()
        l1 = f_sum.sum() / x.shape[0]
        loss = mse + self.sparsity_coefficient(step) * l1
        return LossOut(loss, err.detach(), f_sum.detach() > 0, l0,
                       {"mse_loss": mse.detach(), "l1": l1.detach()})


class Relu2024(Recipe):
    """[AU]: inputs scaled to E‖x‖² = d_in, ‖x − x̂‖² + λ Σ f_i ‖W_dec,i‖, no norm constraint."""

    pre_bias = False
    unit_norm = False
    scale_inputs = True
    fold_norms = True

    def init_weights(self, d: Dictionary, gen: torch.Generator) -> None:
        d.W_dec.copy_(random_directions(d.d_sae, d.d_in, gen) * self.cfg.decoder_init_norm)
        d.W_enc.copy_(d.W_dec.T)
        d.b_enc.zero_()
        d.b_dec.zero_()

    def loss(self, d, x, step, dead, stats=False):
        err, f_sum, l0 = _relu_parts(d, x, False, stats)
        mse = err.pow(2).sum() / x.shape[0]
        norms = torch.linalg.vector_norm(d.W_dec, dim=1)
        sparsity = f_sum @ norms / x.shape[0]
        loss = mse + self.sparsity_coefficient(step) * sparsity
        return LossOut(loss, err.detach(), f_sum.detach() > 0, l0,
                       {"mse_loss": mse.detach(), "sparsity": sparsity.detach()})


class TopK(Recipe):
    """OpenAI: f = ReLU(TopK(pre)); normalised MSE + aux_coefficient · AuxK on dead features."""

    scale_inputs = True
    architecture = "topk"

    def sparsity_coefficient(self, step: int) -> float:
        return 0.0

    def loss(self, d, x, step, dead, stats=False):
        pre = encoder_pre(d, x, True)
        vals, idx = pre.topk(self.cfg.k, dim=1, sorted=False)
        vals = torch.relu(vals).float()
        # Sparse decode: Σ_j vals_j W_dec[idx_j] per row, never a dense [B, d_sae] product.
        x_hat = F.embedding_bag(idx, d.W_dec, per_sample_weights=vals, mode="sum") + d.b_dec
        err = x_hat - x
        # OpenAI's normalised MSE, pooled over the batch: ‖x̂ − x‖² / ‖x‖².
        nmse = err.pow(2).sum() / x.pow(2).sum().clamp_min(1e-12)
        active = vals > 0
        # A scatter, not fired[idx[active]] = True: indexing by a mask waits for the GPU.
        fired = torch.zeros(d.d_sae, dtype=vals.dtype, device=x.device).scatter_reduce_(
            0, idx.flatten(), vals.flatten(), "amax") > 0
        parts = {"nmse": nmse.detach()}
        loss = nmse
        if self.cfg.aux_coefficient > 0 and bool(dead.any()):
            aux = self.aux_loss(d, pre, dead, err.detach())
            parts["auxk"] = aux.detach()
            loss = loss + self.cfg.aux_coefficient * aux
        l0 = active.sum(dtype=torch.float32) / x.shape[0] if stats else None
        return LossOut(loss, err.detach(), fired, l0, parts)

    def aux_loss(self, d: Dictionary, pre: torch.Tensor, dead: torch.Tensor,
                 err: torch.Tensor) -> torch.Tensor:
        """AuxK: the top-k_aux dead latents reconstruct the residual x − x̂ (normalised)."""
        dead_idx = dead.nonzero().squeeze(1)
        k_aux = min(self.cfg.k_aux or self.d_in // 2, dead_idx.numel())
        vals, local = pre[:, dead_idx].topk(k_aux, dim=1, sorted=False)
        recon = F.embedding_bag(dead_idx[local], d.W_dec, mode="sum",
                                per_sample_weights=torch.relu(vals).float())
        residual = -err
        return (recon - residual).pow(2).sum() / residual.pow(2).sum().clamp_min(1e-12)


RECIPE_CLASSES: dict[str, type[Recipe]] = {
    "relu-l1-2023": Relu2023, "relu-l1-2024": Relu2024, "topk": TopK}


def make_recipe(cfg: SaeConfig, d_in: int) -> Recipe:
    """The recipe object for a resolved config."""
    return RECIPE_CLASSES[cfg.recipe](cfg, d_in)
