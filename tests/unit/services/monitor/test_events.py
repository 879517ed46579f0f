"""Decoding stream entries: good events, dead letters with a reason, deleted entries."""

from __future__ import annotations

import math

import pytest
from trace_events import trace_event

from featurewatch.contracts import TRACE_FIELD
from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import Batch
from featurewatch.services.monitor.events import decode_entry

LAYOUT = BucketLayout(10, 60)
NOW = 1_000_000.0


def decode(fields, known_d_sae=100, now=NOW):
    batch = Batch()
    decode_entry(b"1-0", fields, "d1", lambda event_d_sae: known_d_sae, LAYOUT, now, batch)
    return batch


def entry(event):
    return {TRACE_FIELD: event.SerializeToString()}


def test_good_event_keeps_arrays_and_bucket():
    event = trace_event("r1", {3: (2, 0.5), 9: (1, 2.0)}, t=NOW - 12, chunk=4)
    batch = decode(entry(event))
    (good,) = batch.good
    assert good.event_key == "r1:4"
    assert good.bucket == LAYOUT.index(NOW - 12)
    assert good.ids.tolist() == [3, 9] and good.counts.tolist() == [2, 1]
    assert good.maxes.tolist() == [0.5, 2.0]
    assert good.ids.dtype.str == "<u4" and good.maxes.dtype.str == "<f4"


def test_late_event_has_no_bucket_and_future_clock_is_clamped():
    assert decode(entry(trace_event("r", {1: (1, 1.0)}, t=NOW - 500))).good[0].bucket is None
    future = decode(entry(trace_event("r", {1: (1, 1.0)}, t=NOW + 3600))).good[0]
    assert future.bucket == LAYOUT.index(NOW)


def test_event_without_time_counts_now():
    event = trace_event("r", {1: (1, 1.0)})
    event.ClearField("time")
    assert decode(entry(event)).good[0].bucket == LAYOUT.index(NOW)


def _bad(**changes):
    event = trace_event("r1", {3: (2, 0.5), 9: (1, 2.0)})
    for name, value in changes.items():
        if isinstance(value, list):
            getattr(event, name)[:] = value
        else:
            setattr(event, name, value)
    return entry(event)


@pytest.mark.parametrize(("fields", "reason"), [
    ({TRACE_FIELD: b"\xff\xff not protobuf"}, "payload is not a TraceEvent"),
    ({b"other": b"x"}, "entry has no 'event' field"),
    (_bad(request_id=""), "request_id: empty"),
    (_bad(dictionary_id="d2"), "dictionary_id: 'd2' was published on the stream of 'd1'"),
    (_bad(d_sae=50), "d_sae: 50 but dictionary 'd1' has d_sae=100"),
    (_bad(feature_ids=[3, 100]), "id 100 is out of range for d_sae=100"),
    (_bad(feature_ids=[3, 3]), "an id appears twice"),
    (_bad(fire_counts=[2]), "feature arrays differ in length"),
    (_bad(fire_counts=[2, 11]), "fire_counts: 11 exceeds token_count=10"),
    (_bad(max_activations=[0.5, math.nan]), "max_activations: not all finite"),
])
def test_malformed_entries_become_dead_letters(fields, reason):
    batch = decode(fields)
    assert not batch.good
    (bad,) = batch.bad
    assert reason in bad.reason
    assert bad.entry_id == "1-0"


def test_unknown_d_sae_without_event_d_sae_is_a_dead_letter():
    batch = decode(_bad(d_sae=0), known_d_sae=None)
    assert "d_sae: 0 and the dictionary's d_sae is not known" in batch.bad[0].reason


def test_deleted_entry_is_gone():
    assert decode(None).gone == ["1-0"]
    assert decode({}).gone == ["1-0"]
