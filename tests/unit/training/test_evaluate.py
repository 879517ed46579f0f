"""Dictionary evaluation on tiny random HF models: loss recovered, CE/KL, L0, feature health."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from random_lms import VOCAB
from random_lms import random_lm as tiny_model

from featurewatch.errors import ConfigError, CorpusError, ModelError
from featurewatch.training.density import density_summary
from featurewatch.training.dictionary import Dictionary
from featurewatch.training.evaluate import (
    EvaluateConfig,
    evaluate_dictionary,
    plot_density_histogram,
)
from featurewatch.training.hooks import capture, resolve

HOOK = "blocks.0.mlp.hook_post"
CTX = 12
CFG = EvaluateConfig(batch_size=4, autocast=False, device="cpu")


def tokens(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (n, CTX)).astype(np.int32)


def signed_identity(d_in: int) -> Dictionary:
    """A perfect dictionary: features relu(x_j) and relu(−x_j), decoded as x_j − (−x_j)·… = x."""
    d = Dictionary(d_in, 2 * d_in)
    eye = torch.eye(d_in)
    with torch.no_grad():
        d.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        d.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return d


def noisy_identity(d_in: int, noise: float = 0.3, seed: int = 1) -> Dictionary:
    """An imperfect dictionary: the signed identity with Gaussian noise on the decoder."""
    d = signed_identity(d_in)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        d.W_dec.add_(noise * torch.randn(d.W_dec.shape, generator=gen))
    return d


def zero_dictionary(d_in: int, d_sae: int = 8) -> Dictionary:
    """Encodes everything to no feature, decodes to 0 (b_dec = 0)."""
    d = Dictionary(d_in, d_sae)
    with torch.no_grad():
        d.W_enc.zero_()
        d.W_dec.zero_()
    return d


def acts_of(model, hook_point: str, ids: np.ndarray) -> torch.Tensor:
    with torch.no_grad(), capture(model, hook_point) as store:
        model(input_ids=torch.as_tensor(ids, dtype=torch.long))
    return store[0].reshape(-1, store[0].shape[-1])


def direct_log_probs(model, ids: np.ndarray, replace=None) -> torch.Tensor:
    """Log-probabilities with the MLP output projection's input replaced by `replace(x)`."""
    proj = model.transformer.h[0].mlp.c_proj
    handle = proj.register_forward_pre_hook(lambda _m, args: (replace(args[0]),)) if replace \
        else None
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.as_tensor(ids, dtype=torch.long)).logits
    finally:
        if handle:
            handle.remove()
    return logits[:, :-1].float().log_softmax(-1)


def ce(log_probs: torch.Tensor, ids: np.ndarray) -> float:
    targets = torch.as_tensor(ids[:, 1:], dtype=torch.long)
    return float(F.nll_loss(log_probs.reshape(-1, VOCAB), targets.reshape(-1)))


def test_perfect_reconstruction_recovers_all_loss() -> None:
    model = tiny_model()
    m = evaluate_dictionary(model, signed_identity(32), HOOK, tokens(), CFG, progress=False)
    assert m["loss_recovered"] == 1.0
    assert m["kl_spliced"] == 0.0
    assert m["fvu"] == 0.0 and m["mse"] == 0.0
    assert m["ce_loss_spliced"] == m["ce_loss_clean"] < m["ce_loss_zero_ablation"]
    assert m["kl_zero_ablation"] > 0
    json.dumps(m, allow_nan=False)  # metrics.json must be strict JSON


def test_zero_reconstruction_recovers_nothing() -> None:
    m = evaluate_dictionary(tiny_model(), zero_dictionary(32), HOOK, tokens(), CFG,
                            progress=False)
    assert m["loss_recovered"] == 0.0
    assert m["ce_loss_spliced"] == m["ce_loss_zero_ablation"]
    assert m["kl_spliced"] == m["kl_zero_ablation"] > 0
    assert m["fvu"] >= 1.0  # predicting 0 is no better than predicting the mean
    assert m["l0"] == 0.0 and m["dead"] == 8 and m["dense"] == 0


def test_losses_match_a_direct_computation() -> None:
    model, ids = tiny_model(seed=3, init=0.5), tokens(8, seed=1)
    dictionary = noisy_identity(32)
    m = evaluate_dictionary(model, dictionary, HOOK, ids, CFG, progress=False)

    clean = direct_log_probs(model, ids)
    labels = torch.as_tensor(ids, dtype=torch.long)
    with torch.no_grad():
        hf_loss = float(model(input_ids=labels, labels=labels).loss)
    mean = acts_of(model, HOOK, ids).mean(0)
    with torch.no_grad():
        zero = direct_log_probs(model, ids, torch.zeros_like)
        spliced = direct_log_probs(model, ids, lambda x: dictionary(x)[0])
        mean_abl = direct_log_probs(model, ids, lambda x: mean.expand_as(x))
    l_clean, l_zero, l_spl = ce(clean, ids), ce(zero, ids), ce(spliced, ids)
    kl_zero = float(F.kl_div(zero, clean, log_target=True, reduction="sum")) / clean.shape[0] \
        / clean.shape[1]

    assert m["ce_loss_clean"] == pytest.approx(hf_loss, rel=1e-6)
    assert m["ce_loss_clean"] == pytest.approx(l_clean, rel=1e-6)
    assert m["ce_loss_zero_ablation"] == pytest.approx(l_zero, rel=1e-6)
    assert m["ce_loss_spliced"] == pytest.approx(l_spl, rel=1e-6)
    assert m["ce_loss_mean_ablation"] == pytest.approx(ce(mean_abl, ids), rel=1e-5)
    assert m["kl_zero_ablation"] == pytest.approx(kl_zero, rel=1e-5)
    assert l_zero - l_clean > 0.1  # well above float32 rounding of the CE sums
    assert m["loss_recovered"] == pytest.approx((l_zero - l_spl) / (l_zero - l_clean), abs=1e-5)
    assert m["n_loss_tokens"] == ids.shape[0] * (CTX - 1)
    assert m["n_tokens"] == ids.size


def test_l0_and_feature_health_on_a_constructed_dictionary() -> None:
    """Signed identity + one always-on feature + one never-on feature, all counted by hand."""
    model, ids = tiny_model(), tokens(8)
    d = Dictionary(32, 66)
    base = signed_identity(32)
    with torch.no_grad():
        for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
            getattr(d, name).zero_()
        d.W_enc[:, :64] = base.W_enc
        d.W_dec[:64] = base.W_dec
        d.b_enc[64], d.b_enc[65] = 1.0, -1.0  # feature 64 always fires, 65 never
    m = evaluate_dictionary(model, d, HOOK, ids, CFG, progress=False)

    x = acts_of(model, HOOK, ids)
    expected = torch.cat([(x > 0).double().mean(0), (x < 0).double().mean(0),
                          torch.tensor([1.0, 0.0], dtype=torch.float64)])
    assert m["feature_density"] == pytest.approx(expected.tolist(), abs=1e-12)
    assert m["l0"] == pytest.approx(float((x != 0).sum(1).double().mean()) + 1.0)
    assert m["dead"] == int((expected == 0).sum()) >= 33  # post-ReLU: no x_j < 0, plus #65
    assert m["dense"] == int((expected > 0.01).sum())
    assert m["ultralow"] == 0  # 96 tokens cannot resolve a density below 1e-6
    assert m["dead_fraction"] == pytest.approx(m["dead"] / 66)
    hist = m["density_histogram"]
    assert sum(hist["counts"]) + hist["dead"] == 66 and hist["dead"] == m["dead"]
    assert hist["counts"][-1] >= 1  # the always-on feature sits in the last bin (log10 1 = 0)
    assert m["loss_recovered"] == 1.0  # the extra features decode to nothing


def test_density_summary_counts_by_hand() -> None:
    n = 10_000_000
    counts = np.array([0, 0, 5, 10, 1_000, 100_000, 200_000, 1])
    s = density_summary(counts, n, ultralow_threshold=1e-6, dense_threshold=0.01, bins=8,
                        log10_min=-8.0)
    # densities 0, 0, 5e-7 (ultralow), 1e-6 (not: strict), 1e-4, 0.01 (not dense: strict),
    # 0.02 (dense), 1e-7 (ultralow)
    assert (s["dead"], s["ultralow"], s["dense"]) == (2, 2, 1)
    assert s["density_histogram"]["counts"] == [0, 2, 1, 0, 1, 0, 2, 0]
    assert s["density_histogram"]["log10_edges"] == [-8.0 + i for i in range(9)]
    assert s["density_histogram"]["dead"] == 2
    assert s["density_resolution"] == 1e-7
    assert s["feature_density"][2] == 5e-7
    clipped = density_summary(np.array([1, 0]), 10**10, ultralow_threshold=1e-6,
                              dense_threshold=0.01, bins=8, log10_min=-8.0)
    assert clipped["density_histogram"]["counts"][0] == 1  # 1e-10 goes in the first bin


@pytest.mark.parametrize("family", ["gpt_neox", "llama"])
@pytest.mark.parametrize("hook_point", ["blocks.0.mlp.hook_post", "blocks.1.hook_mlp_out",
                                        "blocks.1.hook_resid_post"])
def test_other_layouts(family: str, hook_point: str) -> None:
    model, ids = tiny_model(family), tokens(4)
    d_in = resolve(model, hook_point).d_in
    perfect = evaluate_dictionary(model, signed_identity(d_in), hook_point, ids, CFG,
                                  progress=False)
    assert perfect["d_in"] == d_in
    assert perfect["loss_recovered"] == pytest.approx(1.0, abs=1e-6)
    assert perfect["kl_spliced"] == pytest.approx(0.0, abs=1e-7)
    assert perfect["fvu"] == pytest.approx(0.0, abs=1e-10)
    zero = evaluate_dictionary(model, zero_dictionary(d_in), hook_point, ids, CFG,
                               progress=False)
    assert zero["loss_recovered"] == pytest.approx(0.0, abs=1e-9)


def test_limits_batching_and_train_mode() -> None:
    model, ids = tiny_model(), tokens(6)
    model.train()  # dropout on: evaluation must switch it off and restore the flag
    torch.manual_seed(0)
    d = Dictionary(32, 48)
    cfg = EvaluateConfig(max_tokens=5 * CTX, loss_max_tokens=3 * CTX + 5, batch_size=2,
                         autocast=False)
    a = evaluate_dictionary(model, d, HOOK, ids, cfg, progress=False)
    b = evaluate_dictionary(model, d, HOOK, ids,
                            EvaluateConfig(max_tokens=5 * CTX, loss_max_tokens=3 * CTX + 5,
                                           batch_size=5, autocast=False), progress=False)
    assert model.training
    assert (a["n_tokens"], a["n_loss_tokens"]) == (5 * CTX, 3 * (CTX - 1))
    for key in ("mse", "fvu", "l0", "ce_loss_clean", "ce_loss_spliced", "kl_spliced"):
        assert a[key] == pytest.approx(b[key], rel=1e-6), key
    assert a["feature_density"] == b["feature_density"]


def test_bf16_autocast_stays_close_to_float32() -> None:
    model, ids, d = tiny_model(init=0.5), tokens(8), noisy_identity(32)
    fp32 = evaluate_dictionary(model, d, HOOK, ids, CFG, progress=False)
    bf16 = evaluate_dictionary(model, d, HOOK, ids, EvaluateConfig(batch_size=4, autocast=True),
                               progress=False)
    assert bf16["ce_loss_clean"] == pytest.approx(fp32["ce_loss_clean"], rel=1e-2)
    assert bf16["fvu"] == pytest.approx(fp32["fvu"], rel=5e-2)
    # Compare the losses, not their ratio: a random model's ablation gap is too small for it.
    for key in ("ce_loss_spliced", "ce_loss_zero_ablation", "ce_loss_mean_ablation"):
        assert bf16[key] == pytest.approx(fp32[key], rel=1e-2), key
    assert bf16["kl_spliced"] == pytest.approx(fp32["kl_spliced"], rel=0.1, abs=1e-3)


def test_bad_inputs_name_what_is_wrong() -> None:
    model = tiny_model()
    with pytest.raises(ModelError, match=r"blocks\.0\.mlp\.hook_post.*d_in=32.*d_in=16"):
        evaluate_dictionary(model, Dictionary(16, 8), HOOK, tokens(), CFG, progress=False)
    with pytest.raises(ModelError, match="blocks.0.nope"):
        evaluate_dictionary(model, Dictionary(32, 8), "blocks.0.nope", tokens(), CFG)
    with pytest.raises(ModelError, match="vocab_size is 64"):
        evaluate_dictionary(model, Dictionary(32, 8), HOOK, tokens() + VOCAB, CFG)
    with pytest.raises(ModelError, match="max_position_embeddings is 32"):
        evaluate_dictionary(model, Dictionary(32, 8), HOOK, np.zeros((2, 40), np.int64), CFG)
    with pytest.raises(CorpusError, match=r"shape \[12\]"):
        evaluate_dictionary(model, Dictionary(32, 8), HOOK, tokens()[0], CFG)
    with pytest.raises(CorpusError, match="integer"):
        evaluate_dictionary(model, Dictionary(32, 8), HOOK, tokens().astype(float), CFG)
    with pytest.raises(ConfigError, match="batch_size=0"):
        EvaluateConfig(batch_size=0)
    with pytest.raises(ConfigError, match="dense_threshold=2"):
        EvaluateConfig(dense_threshold=2)
    with pytest.raises(ConfigError, match="device='gpu0'"):
        EvaluateConfig(device="gpu0")


def test_plot_density_histogram(tmp_path) -> None:
    import matplotlib.image

    m = evaluate_dictionary(tiny_model(), Dictionary(32, 40), HOOK, tokens(), CFG,
                            progress=False)
    path = plot_density_histogram(m, tmp_path / "plots" / "density.png")
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image.std() > 0  # something was drawn
    with pytest.raises(ValueError, match="density_histogram"):
        plot_density_histogram({"l0": 3.0}, tmp_path / "x.png")
