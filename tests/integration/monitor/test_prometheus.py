"""A real Prometheus scraping a real monitor: the rendered rules load and the flagged-feature
alert fires from ingested events; every dashboard query parses, and the monitor's return data.

(The full flow with the inference service and Alertmanager is the e2e suite's job.)
"""

from __future__ import annotations

import time

import pytest
import yaml
from dashboard_build import load_build
from prometheus_client import CollectorRegistry
from servers import free_port, require_binary, wait_until
from trace_events import publish, trace_event, write_bundle

from featurewatch.services.monitor.alerts import AlertOptions, render_rules
from featurewatch.services.monitor.config import MonitorConfig
from featurewatch.services.monitor.flags import Flag
from featurewatch.services.monitor.server import MonitorServer
from featurewatch.stack import prometheus_process
from featurewatch.up_observe import prometheus_api

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FLAG = Flag("d1", 7, "DNA sequences", "critical", 1.0, "https://runbooks.example/dna")


def api(port: int, path: str, **params) -> dict:
    return prometheus_api(f"http://127.0.0.1:{port}", path, **params)


@pytest.fixture
def stack(redis_server, tmp_path):
    require_binary("prometheus")
    bundle = write_bundle(tmp_path / "bundle", "d1", 100, density=[0.01] * 100)
    flags = tmp_path / "flags.yaml"
    flags.write_text(yaml.safe_dump({"flags": [{
        "dictionary": FLAG.dictionary_id, "feature": FLAG.feature, "name": FLAG.name,
        "severity": FLAG.severity, "min_activation": FLAG.min_activation,
        "runbook_url": FLAG.runbook_url}]}))
    monitor = MonitorServer(MonitorConfig(
        redis_url=redis_server.url, dictionaries=(str(bundle),), flags_file=str(flags),
        host="127.0.0.1", port=-1, metrics_port=0, block_ms=100, drift_min_tokens=10,
        consumer_name="m1"), CollectorRegistry())
    monitor.start()
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(render_rules([FLAG], AlertOptions(flag_for="1s"))))
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "featurewatch-monitor", "static_configs": [
            {"targets": [f"127.0.0.1:{monitor.metrics_port}"]}]}]}))
    port = free_port()
    prometheus = prometheus_process(config, tmp_path / "prometheus", port)
    prometheus.start(timeout=60)
    try:
        yield monitor, port
    finally:
        prometheus.stop()
        monitor.stop()


def firing(port: int) -> list[dict]:
    alerts = api(port, "alerts")["data"]["alerts"]
    return [a for a in alerts if a["state"] == "firing" and a["labels"]["alertname"] ==
            "FlaggedFeatureFiring"]


def test_flagged_feature_alert_fires_and_dashboard_queries_answer(stack):
    monitor, port = stack
    # traffic without feature 7, and feature 7 below its min_activation: no alert
    background = [trace_event(f"bg{i}", {f: (2, 3.0) for f in range(i % 5, 100, 9) if f != 7})
                  for i in range(30)]
    publish(monitor.client, [*background, trace_event("weak", {7: (5, 0.9)})])
    wait_until(lambda: api(port, "query", query='up{job="featurewatch-monitor"} == 1')
               ["data"]["result"], 30, "prometheus never scraped the monitor")
    time.sleep(3)  # several evaluations with `for: 1s`
    assert monitor.reader.totals("d1").fires == {7: 5}
    assert not firing(port)
    publish(monitor.client, [trace_event(f"hit{i}", {7: (3, 2.5)}) for i in range(3)])
    alerts = wait_until(lambda: firing(port), 60, "FlaggedFeatureFiring never fired")
    labels = alerts[0]["labels"]
    assert (labels["dictionary"], labels["feature"], labels["severity"]) == ("d1", "7",
                                                                            "critical")
    assert alerts[0]["annotations"]["runbook_url"] == FLAG.runbook_url
    build = load_build()
    for title, expr in build.panel_queries():
        reply = api(port, "query", query=expr)
        assert reply["status"] == "success", (title, expr, reply)
        if "featurewatch_inference" not in expr:  # no inference service in this test
            assert reply["data"]["result"], (title, expr)
