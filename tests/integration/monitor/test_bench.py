"""`featurewatch bench monitor` on a tiny workload: both rates measured, every event ingested."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from rich.console import Console

from featurewatch.services.monitor.bench import bench_monitor, make_events, run_bench
from featurewatch.v1 import trace_pb2

pytestmark = pytest.mark.integration


def test_events_have_distinct_sorted_features():
    payloads = make_events(3, features=16, d_sae=64, tokens=8)
    for payload in payloads:
        event = trace_pb2.TraceEvent.FromString(payload)
        ids = list(event.feature_ids)
        assert ids == sorted(set(ids)) and len(ids) == 16 and max(ids) < 64
        assert max(event.fire_counts) <= 8


def test_tiny_run_measures_both_rates():
    result = run_bench(events=60, features=16, d_sae=64, tokens=8, batch_size=16,
                       requests=20_000, pipeline=16, console=Console(quiet=True))
    assert (result.events, result.increments) == (60, 60 * 16)
    assert result.hincrby_per_s > 0 and result.increments_per_s > 0
    assert result.ratio == result.increments_per_s / result.hincrby_per_s
    assert 0 < result.redis_busy_fraction <= 1.5


def test_features_must_fit_the_dictionary():
    result = CliRunner().invoke(bench_monitor, ["--features", "65", "--d-sae", "64"])
    assert result.exit_code == 2 and "must be in 1..d_sae=64" in result.output
