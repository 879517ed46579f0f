"""The dictionary (sparse autoencoder) as used after training: encode, decode, steer.

Tensor names and shapes are SAELens's: W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_in],
b_dec [d_in], and threshold [d_sae] for JumpReLU. Activations are in model units: any
training-time input scaling is folded into the weights before a dictionary is bundled.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Architecture = Literal["standard", "topk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")


class Dictionary(nn.Module):
    """x̄ = x − b_dec; f = σ(x̄ W_enc + b_enc); x̂ = f W_dec + b_dec."""

    def __init__(self, d_in: int, d_sae: int, architecture: Architecture = "standard",
                 k: int | None = None) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if architecture == "topk" and not (k and 0 < k <= d_sae):
            raise ValueError(f"topk needs 0 < k <= d_sae ({d_sae}), got k={k}")
        self.d_in, self.d_sae, self.architecture, self.k = d_in, d_sae, architecture, k
        self.W_enc = nn.Parameter(torch.empty(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.empty(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(d_sae))
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations for x [..., d_in] → [..., d_sae]."""
        return (x.to(self.W_enc.dtype) - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """The architecture's nonlinearity applied to pre-activations."""
        if self.architecture == "topk":
            values, indices = torch.relu(pre).topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, indices, values)
        if self.architecture == "jumprelu":
            return pre * (pre > self.threshold).to(pre.dtype) * (pre > 0).to(pre.dtype)
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations f [..., d_sae] of activations x [..., d_in]."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction x̂ [..., d_in] of feature activations f."""
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.encode(x)
        return self.decode(f), f

    def steer(self, x: torch.Tensor, edit) -> tuple[torch.Tensor, torch.Tensor]:
        """The paper's steering: x' = x̂(edit(f)) + (x − x̂(f)); returns (x', edited f).

        Keeping the reconstruction error means only the edited features change the model.
        """
        f = self.encode(x)
        error = x.to(self.W_dec.dtype) - self.decode(f)
        f_edit = edit(f.clone())
        return (self.decode(f_edit) + error).to(x.dtype), f_edit

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a bundle stores, contiguous and detached."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items()}
