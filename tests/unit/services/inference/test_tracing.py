"""Sparse traces (top-k / threshold / all non-zero) and event tallies on constructed features."""

from __future__ import annotations

import numpy as np
import torch

from featurewatch.services.inference.domain import FeatureFilter
from featurewatch.services.inference.tracing import (
    Tally,
    batch_traces,
    fired,
    nonzero_rows,
)

F = torch.tensor([[0.0, 3.0, 0.5, 0.0, 2.0, -4.0],
                  [1.0, 0.0, 0.0, 0.25, 0.0, 0.0]])


def test_default_reports_every_nonzero_feature_by_magnitude():
    (ids0, acts0), (ids1, acts1) = batch_traces(F, [FeatureFilter(("d",))] * 2)
    assert ids0.tolist() == [5, 1, 4, 2] and acts0.tolist() == [-4.0, 3.0, 2.0, 0.5]
    assert ids1.tolist() == [0, 3] and ids0.dtype == np.uint32 and acts0.dtype == np.float32


def test_top_k_and_threshold_per_row():
    top2 = FeatureFilter(("d",), top_k=2)
    above = FeatureFilter(("d",), threshold=0.5)
    (ids0, acts0), (ids1, _), = batch_traces(F, [top2, above])
    assert ids0.tolist() == [5, 1] and acts0.tolist() == [-4.0, 3.0]
    assert ids1.tolist() == [0]  # 0.25 is not above 0.5


def test_untraced_rows_get_none():
    assert batch_traces(F, [None, FeatureFilter(("d",), top_k=1)])[0] is None


def test_top_k_larger_than_nonzero_count_keeps_only_nonzero():
    (ids, _), = batch_traces(F[1:], [FeatureFilter(("d",), top_k=5)])
    assert sorted(ids.tolist()) == [0, 3]


def test_nonzero_rows_by_id():
    (ids0, v0), (ids1, v1) = nonzero_rows(F)
    assert ids0.tolist() == [1, 2, 4, 5] and v0.tolist() == [3.0, 0.5, 2.0, -4.0]
    assert ids1.tolist() == [0, 3] and v1.tolist() == [1.0, 0.25]


def test_fired_counts_only_positive_activations():
    (ids0, v0), (ids1, v1) = [fired(e) for e in nonzero_rows(F)]
    assert ids0.tolist() == [1, 2, 4] and v0.tolist() == [3.0, 0.5, 2.0]
    assert ids1.tolist() == [0, 3]


def test_tally_flush_counts_max_sum_and_chunks():
    tally = Tally(6)
    tally.add([fired(e) for e in nonzero_rows(F)])
    tally.add([fired(e) for e in nonzero_rows(torch.tensor([[0.0, 1.0, 0.0, 0.0, 5.0, 0.0]]))])
    event = tally.flush(request_id="r", dictionary_id="d", model_id="m", final=False)
    assert event.token_count == 3 and event.chunk_index == 0 and not event.final_chunk
    got = {i: (c, m, s) for i, c, m, s in zip(event.feature_ids, event.fire_counts,
                                              event.max_activations, event.sum_activations,
                                              strict=True)}
    assert got == {0: (1, 1.0, 1.0), 1: (2, 3.0, 4.0), 2: (1, 0.5, 0.5), 3: (1, 0.25, 0.25),
                   4: (2, 5.0, 7.0)}
    assert event.d_sae == 6 and event.model_id == "m" and event.time.seconds > 0
    second = tally.flush(request_id="r", dictionary_id="d", model_id="m", final=True)
    assert second.chunk_index == 1 and second.final_chunk and second.token_count == 0
    assert list(second.feature_ids) == []
