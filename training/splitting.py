"""The resolution knob: how features split as the dictionary grows (512 → 4096 → 16384).

Features of dictionaries of adjacent sizes, trained on the same activations, are linked when
their activations on the same tokens have cosine similarity above a threshold (the paper: ~0.4).
A feature usually links to several features of the larger dictionary (it splits), and a larger
feature can link to several smaller ones (the structure merges too, it is not a strict tree).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurewatch.training.feature_stats import SparseCodes
from featurewatch.training.universality import similarity


@dataclass(frozen=True)
class Level:
    """One dictionary of a run, as the split analysis needs it."""

    dictionary_id: str
    codes: SparseCodes
    labels: Sequence[str]
    density: np.ndarray


def link(small: SparseCodes, large: SparseCodes, threshold: float, max_children: int
         ) -> list[list[tuple[int, float]]]:
    """For every feature of `small`, the `large` features with cosine > threshold, best first."""
    sims = similarity(small, large, centered=False).tocsr()
    out: list[list[tuple[int, float]]] = []
    for i in range(small.d):
        lo, hi = sims.indptr[i], sims.indptr[i + 1]
        cols, vals = sims.indices[lo:hi], sims.data[lo:hi]
        keep = vals > threshold
        order = np.argsort(-vals[keep], kind="stable")[:max_children]
        out.append([(int(c), round(float(v), 4))
                    for c, v in zip(cols[keep][order], vals[keep][order], strict=True)])
    return out


def _example_root(children: Sequence[list[list[tuple[int, float]]]]) -> int | None:
    """The smallest dictionary's feature with the richest split (≥ 2 children, most
    descendants)."""
    best, best_key = None, None
    for root, first in enumerate(children[0]):
        if not first:
            continue
        frontier, total, width = {c for c, _ in first}, len(first), len(first)
        for level in children[1:]:
            frontier = {c for f in frontier for c, _ in level[f]}
            total += len(frontier)
        key = (min(width, 3), total, sum(s for _, s in first))
        if best_key is None or key > best_key:
            best, best_key = root, key
    return best


def _entry(level: Level, feature: int, parents: list[list[Any]]) -> dict[str, Any]:
    return {"feature": feature, "label": level.labels[feature],
            "density": float(level.density[feature]), "parents": parents}


def split_example(levels: Sequence[Level], children: Sequence[list[list[tuple[int, float]]]]
                  ) -> dict[str, Any] | None:
    """One feature of the smallest dictionary followed through every larger one."""
    root = _example_root(children) if children else None
    if root is None:
        return None
    out_levels = [{"dictionary": levels[0].dictionary_id, "d_sae": levels[0].codes.d,
                   "features": [_entry(levels[0], root, [])]}]
    frontier = [root]
    for n, links in enumerate(children):
        parents: dict[int, list[list[Any]]] = {}
        for f in frontier:
            for c, sim in links[f]:
                parents.setdefault(c, []).append([f, sim])
        level = levels[n + 1]
        entries = [_entry(level, c, ps) for c, ps in
                   sorted(parents.items(), key=lambda kv: -max(s for _, s in kv[1]))]
        out_levels.append({"dictionary": level.dictionary_id, "d_sae": level.codes.d,
                           "features": entries})
        frontier = list(parents)
    return {"dictionary": levels[0].dictionary_id, "feature": root,
            "label": levels[0].labels[root], "levels": out_levels}


def split_report(levels: Sequence[Level], threshold: float, max_children: int
                 ) -> dict[str, Any]:
    """analysis.json's splits section: links between adjacent sizes and one worked example."""
    levels = sorted(levels, key=lambda lv: lv.codes.d)
    children = [link(a.codes, b.codes, threshold, max_children)
                for a, b in zip(levels, levels[1:], strict=False)]
    links = [{"from": a.dictionary_id, "feature": i, "to": b.dictionary_id,
              "children": [[c, s] for c, s in kids]}
             for (a, b), per_feature in zip(zip(levels, levels[1:], strict=False), children,
                                            strict=True)
             for i, kids in enumerate(per_feature) if kids]
    return {"dictionaries": [lv.dictionary_id for lv in levels], "threshold": threshold,
            "links": links, "example": split_example(levels, children)}
