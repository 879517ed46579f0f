"""The geometric median (Weiszfeld's algorithm): where the 2023 and TopK recipes start b_dec.

The geometric median minimises the sum of Euclidean distances to the points, so unlike the
mean it is not dragged by a few outlying activations.
"""

from __future__ import annotations

import torch


def geometric_median(points: torch.Tensor, *, max_iter: int = 200, tol: float = 1e-6,
                     eps: float = 1e-8) -> torch.Tensor:
    """Geometric median of `points` [n, d] (computed in float64, returned in their dtype).

    Weiszfeld iterates y ← Σ w_i p_i / Σ w_i with w_i = 1/‖p_i − y‖, starting at the mean.
    Distances are floored at `eps` so that landing on a data point does not divide by zero.
    Stops when y moves less than `tol` relative to its norm, or after `max_iter` iterations.
    """
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty [n, d] matrix, got {list(points.shape)}")
    p = points.to(torch.float64)
    y = p.mean(dim=0)
    for _ in range(max_iter):
        weights = 1.0 / torch.linalg.vector_norm(p - y, dim=1).clamp_min(eps)
        y_next = weights @ p / weights.sum()
        moved = torch.linalg.vector_norm(y_next - y)
        y = y_next
        if moved <= tol * max(1.0, float(torch.linalg.vector_norm(y))):
            break
    return y.to(points.dtype)
