"""A MonitorServer on a real Redis: gRPC API status codes, /metrics, replicas sharing work."""

from __future__ import annotations

import subprocess
import time
import urllib.request

import grpc
import numpy as np
import pytest
import servers
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from servers import require_binary
from trace_events import Expected, publish, random_events, trace_event, write_bundle

from featurewatch.services.monitor.aggregates import AggregateReader, BucketLayout
from featurewatch.services.monitor.config import MonitorConfig
from featurewatch.services.monitor.drift import firing_drift
from featurewatch.services.monitor.flags import Flag
from featurewatch.services.monitor.server import SERVICE_NAME, MonitorServer
from featurewatch.v1 import monitor_pb2 as pb
from featurewatch.v1 import monitor_pb2_grpc

pytestmark = pytest.mark.integration
DENSITY = np.linspace(0.001, 0.2, 100)


def wait_until(predicate, timeout: float = 20.0) -> None:
    servers.wait_until(predicate, timeout, "condition not reached", interval=0.05)


def start(redis_server, tmp_path, **fields) -> MonitorServer:
    bundle = write_bundle(tmp_path / "bundle", "d1", 100, density=DENSITY.tolist())
    settings = {"redis_url": redis_server.url, "dictionaries": (str(bundle),),
                "host": "127.0.0.1", "port": 0, "metrics_port": 0, "block_ms": 100,
                "drift_min_tokens": 10, "discovery_interval_s": 0.2, **fields}
    server = MonitorServer(MonitorConfig(**settings), CollectorRegistry(), redis_wait_s=5)
    server.start()
    return server


@pytest.fixture
def server(redis_server, tmp_path):
    server = start(redis_server, tmp_path, consumer_name="m1")
    yield server
    server.stop()


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield monitor_pb2_grpc.MonitorServiceStub(channel), channel


def code_of(call, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value.code(), info.value.details()


def test_flag_api_validates_and_stores(stub):
    api, _ = stub
    flag = pb.Flag(dictionary_id="d1", feature=7, name="DNA", severity=pb.SEVERITY_CRITICAL,
                   min_activation=0.5, runbook_url="https://runbooks.example/dna")
    assert api.UpsertFlag(pb.UpsertFlagRequest(flag=flag)).created
    assert not api.UpsertFlag(pb.UpsertFlagRequest(flag=flag)).created
    listed = api.ListFlags(pb.ListFlagsRequest()).flags
    assert [(f.feature, f.severity) for f in listed] == [(7, pb.SEVERITY_CRITICAL)]
    bad = [
        (pb.Flag(dictionary_id="nope", feature=1, name="x"), grpc.StatusCode.INVALID_ARGUMENT,
         "dictionary 'nope' is unknown"),
        (pb.Flag(dictionary_id="d1", feature=100, name="x"), grpc.StatusCode.OUT_OF_RANGE,
         "feature 100 is out of range"),
        (pb.Flag(dictionary_id="d1", feature=1, name=""), grpc.StatusCode.INVALID_ARGUMENT,
         "field 'name'"),
        (pb.Flag(dictionary_id="d1", feature=1, name="x", severity=9),
         grpc.StatusCode.INVALID_ARGUMENT, "field 'severity'=9"),
        (pb.Flag(dictionary_id="d1", feature=1, name="x", min_activation=-1),
         grpc.StatusCode.OUT_OF_RANGE, "min_activation"),
    ]
    for flag, code, message in bad:
        got = code_of(api.UpsertFlag, pb.UpsertFlagRequest(flag=flag))
        assert got[0] == code and message in got[1], got
    assert code_of(api.UpsertFlag, pb.UpsertFlagRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert api.DeleteFlag(pb.DeleteFlagRequest(dictionary_id="d1", feature=7)).deleted
    assert not api.ListFlags(pb.ListFlagsRequest(dictionary_id="d1")).flags


def test_firing_rate_and_top_features(stub, server):
    api, _ = stub
    publish(server.client, [trace_event("a", {1: (4, 1.0), 2: (1, 0.5)}, tokens=10),
                            trace_event("b", {1: (2, 3.0)}, tokens=10)])
    reader = AggregateReader(server.client, server.layout)
    wait_until(lambda: reader.totals("d1").events == 2)
    rate = api.GetFiringRate(pb.GetFiringRateRequest(dictionary_id="d1", feature=1))
    assert (rate.fire_count, rate.token_count, rate.max_activation) == (6, 20, 3.0)
    assert rate.firing_rate == pytest.approx(0.3) and rate.window.seconds == 300
    top = api.TopFeatures(pb.TopFeaturesRequest(dictionary_id="d1", k=1))
    assert [(f.feature, f.fire_count) for f in top.features] == [(1, 6)]
    window = {"seconds": 4000}
    bad = [
        (api.GetFiringRate, pb.GetFiringRateRequest(dictionary_id="d1", feature=1,
                                                    window=window),
         grpc.StatusCode.OUT_OF_RANGE, "exceeds the retention"),
        (api.GetFiringRate, pb.GetFiringRateRequest(dictionary_id="zz", feature=1),
         grpc.StatusCode.INVALID_ARGUMENT, "not a known dictionary"),
        (api.GetFiringRate, pb.GetFiringRateRequest(dictionary_id="d1", feature=100),
         grpc.StatusCode.OUT_OF_RANGE, "out of range"),
        (api.TopFeatures, pb.TopFeaturesRequest(dictionary_id="d1", k=1001),
         grpc.StatusCode.OUT_OF_RANGE, "k: 1001 exceeds 1000"),
    ]
    for call, request, code, message in bad:
        got = code_of(call, request)
        assert got[0] == code and message in got[1], got


def test_health_reports_serving(stub):
    _, channel = stub
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", SERVICE_NAME):
        status = health.Check(health_pb2.HealthCheckRequest(service=service)).status
        assert status == health_pb2.HealthCheckResponse.SERVING


def scrape(server) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def test_metrics_values_and_promtool_lint(server, tmp_path):
    server.flags.upsert(Flag("d1", 3, "Flagged", "critical", 1.0))
    events = random_events(40, prefix="m", seed=3)
    publish(server.client, events)
    reader = AggregateReader(server.client, server.layout)
    wait_until(lambda: reader.totals("d1").events == 40)
    expected = Expected()
    for event in events:
        expected.add(event)
    registry = server.registry
    value = registry.get_sample_value
    assert value("featurewatch_monitor_tokens_observed_total", {"dictionary": "d1"}) == 400
    assert value("featurewatch_monitor_events_processed_total", {"dictionary": "d1"}) == 40
    w = {"dictionary": "d1", "window": "300s"}
    fired = len([f for f, c in expected.fires.items() if c])
    assert value("featurewatch_monitor_features_fired_fraction", w) == fired / 100
    assert value("featurewatch_monitor_drift_js_divergence", w) == pytest.approx(
        firing_drift(DENSITY, expected.fires))
    top_feature = min(expected.fires, key=lambda f: (-expected.fires[f], f))
    assert value("featurewatch_monitor_top_feature_id", {**w, "rank": "1"}) == top_feature
    flag = {"dictionary": "d1", "feature": "3", "name": "Flagged", "severity": "critical"}
    assert value("featurewatch_monitor_flagged_feature_fires_total", flag) == expected.fires[3]
    assert value("featurewatch_monitor_flagged_feature_max_activation", flag) == \
        pytest.approx(expected.maxes[3])
    assert value("featurewatch_monitor_consumer_lag", {"dictionary": "d1"}) == 0
    text = scrape(server)
    assert 'feature="' not in text.replace('feature="3"', "")  # only flagged features
    path = tmp_path / "metrics.txt"
    path.write_text(text)
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], input=text,
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_collector_reports_lag_and_pending(redis_server, tmp_path):
    server = start(redis_server, tmp_path, consumer_name="m1", port=-1)
    try:
        server.stop_event.set()  # stop ingesting; metrics still answer
        for _, thread in server.workers.values():
            thread.join(5)
        publish(server.client, random_events(7, prefix="lag"))
        server.client.xreadgroup("featurewatch-monitor", "ghost",
                                 {"featurewatch:{d1}:traces": ">"}, count=2)
        value = server.registry.get_sample_value
        assert value("featurewatch_monitor_consumer_lag", {"dictionary": "d1"}) == 5
        assert value("featurewatch_monitor_pending_events", {"dictionary": "d1"}) == 2
    finally:
        server.stop()


def test_redis_outage_is_reported_and_ingestion_resumes(server, redis_server):
    publish(server.client, random_events(5, prefix="before"))
    reader = AggregateReader(server.client, server.layout)
    wait_until(lambda: reader.totals("d1").events == 5)
    redis_server.stop()
    assert server.registry.get_sample_value("featurewatch_monitor_redis_up") == 0
    redis_server.start()
    wait_until(lambda: server.registry.get_sample_value("featurewatch_monitor_redis_up") == 1)
    publish(server.client, random_events(5, prefix="after"))
    wait_until(lambda: reader.totals("d1").events == 10)
    assert server.stats.redis_errors > 0


def test_two_replicas_share_one_stream(redis_server, tmp_path):
    replicas = [start(redis_server, tmp_path, consumer_name=name, batch_size=5)
                for name in ("r1", "r2")]
    try:
        # Both must be reading before the first event, else one (started late on a busy host)
        # can find the stream already drained: Redis hands entries to blocked readers in turn.
        def consumers() -> set[str]:
            try:
                entries = replicas[0].client.xinfo_consumers("featurewatch:{d1}:traces",
                                                             "featurewatch-monitor")
            except Exception:  # noqa: BLE001 - the group does not exist yet
                return set()
            return {c["name"].decode() if isinstance(c["name"], bytes) else c["name"]
                    for c in entries}
        wait_until(lambda: {"r1", "r2"} <= consumers())
        events = random_events(400, prefix="shared", seed=5)
        for i in range(0, 400, 20):
            publish(replicas[0].client, events[i:i + 20])
            time.sleep(0.01)
        reader = AggregateReader(replicas[0].client, BucketLayout(10, 3600))
        wait_until(lambda: reader.totals("d1").events == 400)
        applied = [r.stats.result.applied for r in replicas]
        assert sum(applied) == 400 and min(applied) > 0, applied
        assert reader.totals("d1").duplicates == 0
        expected = Expected()
        for event in events:
            expected.add(event)
        assert dict(reader.window("d1", 300).fires) == dict(expected.fires)
    finally:
        for replica in replicas:
            replica.stop()
