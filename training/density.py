"""Feature density: how often each feature fires, its health counts and its log10 histogram.

Density of a feature = fraction of evaluated tokens on which its activation is > 0. The paper
judges feature health by it: *dead* features never fire on the evaluated tokens, *ultralow*
features fire but on fewer than 1e-6 of them, *dense* ones on more than 1%. Dead features are
counted apart from the histogram, whose x axis is log10(density).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure


def density_histogram(density: np.ndarray, bins: int, log10_min: float) -> dict[str, Any]:
    """Histogram of log10(density) of the live features over [log10_min, 0].

    Live features rarer than 10**log10_min fall in the first bin; dead features (density 0)
    have no logarithm and are reported as `dead` instead.
    """
    density = np.asarray(density, dtype=np.float64)
    live = density[density > 0]
    logs = np.clip(np.log10(live), log10_min, 0.0)
    counts, edges = np.histogram(logs, bins=bins, range=(log10_min, 0.0))
    return {"log10_edges": [round(float(e), 9) for e in edges], "counts": [int(c) for c in counts],
            "dead": int((density == 0).sum())}


def density_summary(fire_counts: np.ndarray, n_tokens: int, *, ultralow_threshold: float,
                    dense_threshold: float, bins: int, log10_min: float) -> dict[str, Any]:
    """metrics.json's feature-health block from per-feature firing counts over `n_tokens`.

    dead: density == 0; ultralow: 0 < density < ultralow_threshold (dead not included);
    dense: density > dense_threshold. `density_resolution` = 1/n_tokens is the smallest non-zero
    density the evaluation can see: below 1/ultralow_threshold tokens nothing can be ultralow.
    """
    if n_tokens <= 0:
        raise ValueError("n_tokens must be positive")
    density = np.asarray(fire_counts, dtype=np.float64) / n_tokens
    d_sae = max(len(density), 1)
    dead = int((density == 0).sum())
    ultralow = int(((density > 0) & (density < ultralow_threshold)).sum())
    dense = int((density > dense_threshold).sum())
    return {
        "dead": dead,
        "ultralow": ultralow,
        "dense": dense,
        "dead_fraction": dead / d_sae,
        "ultralow_fraction": ultralow / d_sae,
        "dense_fraction": dense / d_sae,
        "ultralow_threshold": ultralow_threshold,
        "dense_threshold": dense_threshold,
        "density_resolution": 1.0 / n_tokens,
        "density_histogram": density_histogram(density, bins, log10_min),
        "feature_density": [float(d) for d in density],
    }


def plot_density_histogram(metrics: dict[str, Any], path: str | Path) -> Path:
    """Render metrics.json's density histogram (dead features as a separate bar) to a PNG."""
    hist = metrics.get("density_histogram")
    if not isinstance(hist, dict) or not {"log10_edges", "counts"} <= hist.keys():
        raise ValueError("metrics has no 'density_histogram' with 'log10_edges' and 'counts'")
    edges = np.asarray(hist["log10_edges"], dtype=np.float64)
    counts = np.asarray(hist["counts"], dtype=np.float64)
    width = float(edges[1] - edges[0]) if len(edges) > 1 else 1.0
    dead = int(hist.get("dead", 0))

    fig = Figure(figsize=(6.4, 3.2), dpi=110, layout="constrained")
    ax = fig.subplots()
    ax.bar(edges[:-1], counts, width=width, align="edge", color="#ff6a00", label="live features")
    dead_x = edges[0] - 1 - width / 2  # a bar of its own left of the axis: no log10(0)
    ax.bar([dead_x], [dead], width=width, align="edge", color="#5b6b80", label=f"dead ({dead})")
    ticks = np.arange(np.ceil(edges[0]), np.floor(edges[-1]) + 1)
    ax.set_xticks([dead_x + width / 2, *ticks], ["dead", *(f"{t:g}" for t in ticks)])
    resolution = metrics.get("density_resolution")
    if isinstance(resolution, float) and resolution > 10 ** edges[0]:
        ax.axvspan(edges[0], np.log10(resolution), color="#dddddd", zorder=0,
                   label="below 1 / tokens evaluated")
    for key, style, label in (("ultralow_threshold", ":", "ultralow < {:g}"),
                              ("dense_threshold", "--", "dense > {:g}")):
        value = metrics.get(key)
        if isinstance(value, int | float) and value > 0:
            ax.axvline(np.log10(value), color="black", linestyle=style, linewidth=0.9,
                       label=label.format(value))
    ax.set_xlabel("log10 density (fraction of tokens on which the feature fires)")
    ax.set_ylabel("features")
    n_features = int(counts.sum()) + dead
    title = f"{n_features} features"
    if isinstance(metrics.get("n_tokens"), int):
        title += f" on {metrics['n_tokens']:,} tokens"
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
