"""The figures of the run report (matplotlib, no pyplot: figures are built and saved directly)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
from matplotlib.figure import Figure

FEATURE_COLOR = "#ff6a00"
NEURON_COLOR = "#5b6b80"
LOG_DENSITY_RANGE = (-8.0, 0.0)
CURVE_KEYS = ("loss", "fvu", "mse", "l0")


def _figure(width: float = 7.5, height: float = 3.4) -> Figure:
    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    fig.set_facecolor("white")
    return fig


def _style(ax: Any) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.25, linewidth=0.6)


def plot_density(densities: dict[str, np.ndarray]) -> Figure:
    """Histogram of log10 feature density, one step outline per dictionary; dead ones counted."""
    fig = _figure()
    ax = fig.subplots()
    bins = np.linspace(*LOG_DENSITY_RANGE, 81)
    for density in densities.values():
        alive = density[density > 0]
        logs = np.clip(np.log10(alive), *LOG_DENSITY_RANGE) if alive.size else alive
        weights = np.full(logs.shape, 1.0 / max(len(density), 1))
        ax.hist(logs, bins=bins, weights=weights, histtype="step", linewidth=1.6)
    ax.legend([f"{name} ({int((d == 0).sum())} dead of {len(d)})"
               for name, d in densities.items()], frameon=False, fontsize=8)
    ax.set_xlabel("log10 density (fraction of tokens on which the feature fires)")
    ax.set_ylabel("fraction of features")
    _style(ax)
    return fig


def plot_training(histories: dict[str, list[dict[str, Any]]]) -> Figure:
    """One panel per recorded curve (loss, fvu, mse, L0), one line per dictionary."""
    keys = [k for k in CURVE_KEYS if any(k in row for h in histories.values() for row in h)]
    cols = min(2, max(len(keys), 1))
    rows = max(1, -(-len(keys) // cols))
    fig = _figure(width=7.5, height=2.8 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys, strict=False):
        for name, history in histories.items():
            rows = [r for r in history if r.get(key) is not None and "step" in r]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], label=name, linewidth=1.3)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step")
        if key != "l0":
            ax.set_yscale("log")
        _style(ax)
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def plot_tradeoff(points: list[dict[str, Any]]) -> Figure:
    """L0 against loss recovered, one labelled point per dictionary, joined by size."""
    fig = _figure(width=6.0, height=3.8)
    ax = fig.subplots()
    ordered = sorted(points, key=lambda p: (p.get("d_sae") or 0, p["id"]))
    xs = [p["l0"] for p in ordered]
    ys = [100 * p["loss_recovered"] for p in ordered]
    ax.plot(xs, ys, color="#c7cdd6", linestyle="--", linewidth=1, zorder=1)
    ax.scatter(xs, ys, s=46, color=FEATURE_COLOR, zorder=2)
    for p, x, y in zip(ordered, xs, ys, strict=True):
        size = f" ({p['d_sae']:,})" if p.get("d_sae") else ""
        ax.annotate(f"{p['id']}{size}", (x, y), textcoords="offset points", xytext=(6, 4),
                    fontsize=8)
    if min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("L0 (mean active features per token)")
    ax.set_ylabel("loss recovered (%)")
    ax.margins(x=0.2, y=0.2)
    _style(ax)
    return fig


def plot_distributions(pair: tuple, *, xlabel: str, value_range: tuple[float, float]) -> Figure:
    """Overlaid histograms of features and neurons with their medians marked."""
    features, neurons, med_f, med_n = pair
    fig = _figure(width=6.5, height=3.2)
    ax = fig.subplots()
    bins = np.linspace(*value_range, 41)
    for values, median, color, name in ((features, med_f, FEATURE_COLOR, "features"),
                                        (neurons, med_n, NEURON_COLOR, "neurons")):
        clipped = np.clip(values[np.isfinite(values)], *value_range)
        weights = np.full(clipped.shape, 1.0 / max(len(clipped), 1))
        ax.hist(clipped, bins=bins, weights=weights, color=color, alpha=0.45,
                label=f"{name} (n={len(clipped)}, median {median:.2f})")
        ax.axvline(median, color=color, linestyle="--", linewidth=1.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction")
    ax.legend(frameon=False, fontsize=8)
    _style(ax)
    return fig


def plot_split(levels: list[dict], labels: dict[tuple[str, int], str]) -> Figure:
    """A feature and its descendants: one column per dictionary size, edges labelled by sim."""
    height = max(2.6, 0.55 * max(len(level["nodes"]) for level in levels) + 1.0)
    fig = _figure(width=3.3 * len(levels) + 0.5, height=height)
    ax = fig.subplots()
    ax.set_axis_off()
    boxes: list[list[tuple[Any, float]]] = []
    for col, level in enumerate(levels):  # nodes first: edges attach to their drawn boxes
        nodes = level["nodes"]
        ys = list(np.linspace(1, 0, len(nodes) + 2)[1:-1]) if len(nodes) > 1 else [0.5]
        size = f" ({level['d_sae']:,})" if level.get("d_sae") else ""
        shown = f", top {len(nodes)} of {level['total']}" if level["total"] > len(nodes) else ""
        ax.text(col, 1.06, f"{level['dictionary']}{size}{shown}", ha="center", fontsize=9,
                weight="bold")
        boxes.append([(_split_node(ax, col, y, node, labels.get((level["dictionary"],
                                                                   node["feature"]))), y)
                      for node, y in zip(nodes, ys, strict=True)])
    for col, level in enumerate(levels[1:], start=1):
        for (child, y), node in zip(boxes[col], level["nodes"], strict=True):
            for parent, sim in node["parents"]:
                _split_edge(ax, (col, y), boxes[col - 1][parent], child, sim)
    ax.set_xlim(-0.6, len(levels) - 0.4)
    ax.set_ylim(-0.05, 1.12)
    return fig


def _split_node(ax: Any, col: int, y: float, node: dict, label: str | None) -> Any:
    text = textwrap.shorten(label or "", 30, placeholder="…")
    return ax.text(col, y, f"#{node['feature']}\n{text}" if text else f"#{node['feature']}",
                   ha="center", va="center", fontsize=7.5, zorder=3,
                   bbox={"boxstyle": "round,pad=0.35", "fc": "#fff1e6", "ec": FEATURE_COLOR})


def _split_edge(ax: Any, end: tuple[int, float], parent: tuple[Any, float], child: Any,
                sim: float) -> None:
    """A line from the parent's box to the child's box, its width and label the similarity."""
    (col, y), (parent_box, y0) = end, parent
    ax.annotate("", xy=(col, y), xytext=(col - 1, y0), zorder=1, arrowprops={
        "arrowstyle": "-", "color": NEURON_COLOR, "alpha": 0.7, "shrinkA": 2, "shrinkB": 2,
        "linewidth": 0.5 + 2.5 * max(sim, 0.0), "patchA": parent_box.get_bbox_patch(),
        "patchB": child.get_bbox_patch()})
    ax.text(col - 0.35, y0 + 0.65 * (y - y0), f"{sim:.2f}", fontsize=6.5, color=NEURON_COLOR,
            ha="center", va="center", zorder=2,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
