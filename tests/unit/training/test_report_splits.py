"""The splitting example as drawable levels: from links, from the example's levels, pruned."""

from __future__ import annotations

from featurewatch.training.report_splits import split_tree

LINKS = [{"from": "a", "feature": 4, "to": "b", "children": [[1, 0.5], [7, 0.9]]},
         {"from": "a", "feature": 5, "to": "b", "children": [[2, 0.8]]},
         {"from": "b", "feature": 1, "to": "c", "children": [[10, 0.6], [11, 0.3]]},
         {"from": "b", "feature": 7, "to": "c", "children": [[11, 0.7], [12, 0.45], [13, 0.41]]}]


def shape(levels: list[dict]) -> list[list[tuple[int, list]]]:
    return [[(n["feature"], n["parents"]) for n in lvl["nodes"]] for lvl in levels]


def test_links_are_followed_from_the_example_with_merges() -> None:
    levels = split_tree({"links": LINKS, "example": {"dictionary": "a", "feature": 4}})
    assert [lvl["dictionary"] for lvl in levels] == ["a", "b", "c"]
    assert shape(levels) == [
        [(4, [])],
        [(7, [[0, 0.9]]), (1, [[0, 0.5]])],  # strongest link first; feature 2 is not 4's child
        # grouped under the strongest parent (7 first), strongest link first within a group
        [(11, [[1, 0.3], [0, 0.7]]), (12, [[0, 0.45]]), (13, [[0, 0.41]]), (10, [[1, 0.6]])],
    ]
    assert [lvl["total"] for lvl in levels] == [1, 2, 4]


def test_pruning_keeps_the_strongest_and_reindexes_parents() -> None:
    levels = split_tree({"links": LINKS, "example": {"dictionary": "a", "feature": 4}},
                        max_nodes=1)
    assert shape(levels) == [[(4, [])], [(7, [[0, 0.9]])], [(11, [[0, 0.7]])]]
    assert [lvl["total"] for lvl in levels] == [1, 2, 4]


def test_without_example_the_first_link_is_the_root() -> None:
    assert shape(split_tree({"links": LINKS}))[0] == [(4, [])]
    assert split_tree({"links": []}) == []


def test_example_levels_are_used_as_given() -> None:
    example = {"dictionary": "a", "feature": 4, "levels": [
        {"dictionary": "a", "d_sae": 16, "features": [{"feature": 4, "label": "base64",
                                                       "parents": []}]},
        {"dictionary": "b", "d_sae": 64, "features": [
            {"feature": 9, "label": "base64 digits", "parents": [[4, 0.7]]},
            {"feature": 3, "label": "base64 letters", "parents": [[4, 0.55]]}]},
        {"dictionary": "c", "d_sae": 256, "features": [
            {"feature": 30, "label": "", "parents": [[9, 0.6], [3, 0.5]]}]}]}
    levels = split_tree({"links": [], "example": example})
    assert shape(levels) == [[(4, [])], [(9, [[0, 0.7]]), (3, [[0, 0.55]])],
                             [(30, [[0, 0.6], [1, 0.5]])]]
    assert [lvl["d_sae"] for lvl in levels] == [16, 64, 256]
    assert levels[1]["nodes"][1]["label"] == "base64 letters"
