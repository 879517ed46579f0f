"""The feature-splitting example of the run report, as levels ready to draw.

analysis.json's `splits` holds links between adjacent dictionary sizes and one worked example.
The example's own `levels` are used when present ({"dictionary", "d_sae", "features": [{"feature",
"label", "parents": [[feature, sim], ...]}]}); otherwise the tree is followed through `links`
from the example's {"dictionary", "feature"} (or the first link's source). Features can have
several parents — the paper's structure splits and merges rather than forming a strict tree.
"""

from __future__ import annotations

from typing import Any

MAX_NODES = 10


def split_tree(splits: dict[str, Any], *, max_nodes: int = MAX_NODES) -> list[dict[str, Any]]:
    """Levels {dictionary, d_sae, total, nodes: [{feature, label, parents: [[index, sim]]}]}.

    `total` counts a level's features before the `max_nodes` strongest-linked are kept; parent
    indexes point into the previous level's kept nodes.
    """
    example = splits.get("example") or {}
    if example.get("levels"):
        levels = _from_example(example["levels"])
    else:
        levels = _from_links(splits.get("links") or [], example)
    return _prune(levels, max_nodes)


def _from_example(raw_levels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    levels: list[dict[str, Any]] = []
    for raw in raw_levels:
        previous = {n["feature"]: i for i, n in enumerate(levels[-1]["nodes"])} if levels else {}
        nodes = [{"feature": int(e["feature"]), "label": e.get("label"),
                  "parents": [[previous[int(f)], float(sim)] for f, sim in e.get("parents") or []
                              if int(f) in previous]} for e in raw["features"]]
        levels.append({"dictionary": raw["dictionary"], "d_sae": raw.get("d_sae"),
                       "total": len(nodes), "nodes": nodes})
    return levels


def _from_links(links: list[dict[str, Any]], example: dict[str, Any]) -> list[dict[str, Any]]:
    start_dict = example.get("dictionary", example.get("from"))
    start_feature = example.get("feature")
    if start_dict is None or start_feature is None:
        if not links:
            return []
        start_dict, start_feature = links[0]["from"], links[0]["feature"]
    levels = [{"dictionary": start_dict, "d_sae": None, "total": 1,
               "nodes": [{"feature": int(start_feature), "label": None, "parents": []}]}]
    while len(levels) <= len(links):
        current = levels[-1]
        index = {n["feature"]: i for i, n in enumerate(current["nodes"])}
        found: dict[int, list[list]] = {}
        target = None
        for link in links:
            if link["from"] == current["dictionary"] and int(link["feature"]) in index:
                target = link["to"]
                for j, sim in link["children"]:
                    found.setdefault(int(j), []).append([index[int(link["feature"])], float(sim)])
        if not found:
            break
        nodes = [{"feature": j, "label": None, "parents": ps} for j, ps in found.items()]
        levels.append({"dictionary": target, "d_sae": None, "total": len(nodes), "nodes": nodes})
    return levels


def _prune(levels: list[dict[str, Any]], max_nodes: int) -> list[dict[str, Any]]:
    """Keep each level's `max_nodes` nodes with the strongest link to a kept parent."""
    kept_levels: list[dict[str, Any]] = []
    for depth, level in enumerate(levels):
        if depth == 0:
            kept_levels.append({**level, "nodes": level["nodes"][:1]})
            continue
        remap = kept_levels[-1].get("remap", {0: 0})
        candidates = []
        for i, node in enumerate(level["nodes"]):
            parents = [[remap[p], s] for p, s in node["parents"] if p in remap]
            if parents:
                strongest = max(parents, key=lambda p: p[1])
                candidates.append((strongest, i, {**node, "parents": parents}))
        candidates.sort(key=lambda c: (-c[0][1], c[1]))
        # drawn grouped under their strongest parent, so that few edges cross
        chosen = sorted(candidates[:max_nodes], key=lambda c: (c[0][0], -c[0][1], c[1]))
        if not chosen:
            break
        kept_levels.append({**level, "nodes": [c[2] for c in chosen],
                            "remap": {c[1]: k for k, c in enumerate(chosen)}})
    for level in kept_levels:
        level.pop("remap", None)
    return kept_levels
