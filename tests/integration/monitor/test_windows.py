"""Firing rates, top-K, max activation and expiry over windows, with an injected clock."""

from __future__ import annotations

import pytest
from monitor_workers import Clock, drain
from trace_events import publish, trace_event

from featurewatch.errors import InvalidRequest
from featurewatch.services.monitor.aggregates import AggregateReader, BucketLayout, bucket_key

pytestmark = pytest.mark.integration
LAYOUT = BucketLayout(bucket_s=10, retention_s=60)
T0 = 1_700_000_000.0  # a multiple of the bucket width: bucket i starts at T0 + 10 i


@pytest.fixture
def ingested(client, make_worker):
    """Events at T0+1, T0+15 and T0+42; a late one at T0-30 arrives when the clock is T0+45."""
    clock = Clock(T0 + 45)
    publish(client, [
        trace_event("a", {1: (4, 1.0), 2: (1, 0.5)}, tokens=10, t=T0 + 1),
        trace_event("b", {1: (2, 3.0), 3: (5, 0.2)}, tokens=20, t=T0 + 15),
        trace_event("c", {3: (8, 0.7), 4: (8, 2.0)}, tokens=10, t=T0 + 42),
        trace_event("late", {5: (1, 7.0)}, tokens=50, t=T0 - 30),
    ])
    drain(make_worker(clock=clock, layout=LAYOUT))
    return AggregateReader(client, LAYOUT, clock=clock), clock


def test_firing_rate_over_windows(ingested):
    reader, _ = ingested
    assert reader.firing_rate("d1", 1, 10) == (0, 10, 0.0)  # only the bucket of "c"
    assert reader.firing_rate("d1", 3, 10) == (8, 10, 0.8)
    assert reader.firing_rate("d1", 1, 40) == (2, 30, pytest.approx(2 / 30))  # b and c
    assert reader.firing_rate("d1", 1, 60) == (6, 40, pytest.approx(6 / 40))  # a, b and c


def test_top_features_over_windows(ingested):
    reader, _ = ingested
    assert reader.top_features("d1", 2, 60) == ([(3, 13), (4, 8)], 40)
    assert reader.top_features("d1", 10, 10) == ([(3, 8), (4, 8)], 10)  # tie: smaller id


def test_windows_move_with_the_clock_and_buckets_expire(client, ingested):
    reader, clock = ingested
    clock.t = T0 + 75  # the window of 60 s now starts at bucket T0+20
    assert reader.window("d1", 60).tokens == 10
    ttl = client.pttl(bucket_key("d1", LAYOUT.index(T0 + 42)))
    # bucket [T0+40, T0+50) lives until T0+110, written when the clock said T0+45
    assert 65_000 >= ttl > 60_000


def test_late_events_count_in_totals_only(ingested):
    reader, _ = ingested
    totals = reader.totals("d1")
    assert (totals.events, totals.tokens, totals.late) == (4, 90, 1)
    assert reader.window("d1", 60).fires[5] == 0
    assert reader.max_activation("d1", [1, 5, 9]) == {1: 3.0, 5: 7.0, 9: 0.0}


def test_window_beyond_retention_is_out_of_range(ingested):
    reader, _ = ingested
    with pytest.raises(InvalidRequest, match="exceeds the retention of 60 s"):
        reader.window("d1", 61)
