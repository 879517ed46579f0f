"""Rendering alert rules from flags (promtool/amtool checks are integration tests)."""

from __future__ import annotations

from featurewatch.services.monitor.alerts import (
    AlertOptions,
    alertmanager_config,
    prometheus_rule,
    render_rules,
    runtime_flag_rule,
)
from featurewatch.services.monitor.flags import Flag

FLAGS = [Flag("d1", 2, "DNA", "critical", 1.0, "https://rb/dna"), Flag('we"ird', 3, "x")]


def rules_by_group(rules):
    return {g["name"]: g["rules"] for g in rules["groups"]}


def test_one_rule_per_flag_with_its_severity_and_runbook():
    groups = rules_by_group(render_rules(FLAGS, AlertOptions(flag_for="1m")))
    dna, weird, runtime = groups["featurewatch-flagged-features"]
    assert dna["labels"] == {"severity": "critical", "dictionary": "d1", "feature": "2"}
    assert 'dictionary="d1", feature="2"' in dna["expr"] and dna["for"] == "1m"
    assert dna["annotations"]["runbook_url"] == "https://rb/dna"
    assert 'dictionary="we\\"ird"' in weird["expr"]  # PromQL string escaping
    assert weird["annotations"]["runbook_url"].endswith("#flaggedfeaturefiring")
    assert runtime["labels"] == {"source": "api"}


def test_runtime_rule_skips_file_flags():
    expr = runtime_flag_rule(FLAGS, AlertOptions())["expr"]
    assert expr.count("unless on (dictionary, feature)") == 1
    assert 'featurewatch_monitor_flag_info{dictionary="d1", feature="2"} or' in expr
    assert "unless" not in runtime_flag_rule([], AlertOptions())["expr"]


def test_operational_alerts_cover_the_pipeline():
    ops = rules_by_group(render_rules([], AlertOptions(monitor_job="mon")))
    names = {r["alert"]: r for r in ops["featurewatch-operations"]}
    assert set(names) == {"FeaturewatchMonitorDown", "FeaturewatchMonitorRedisDown",
                          "FeaturewatchMonitorLagGrowing", "FeaturewatchEventsDeadLettered",
                          "FeaturewatchTraceEventsDropped", "FeaturewatchFeatureDrift"}
    assert names["FeaturewatchMonitorDown"]["expr"] == 'absent(up{job="mon"} == 1)'
    assert "featurewatch_inference_trace_events_dropped_total" in \
        names["FeaturewatchTraceEventsDropped"]["expr"]
    for rule in names.values():
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}


def test_prometheus_rule_wraps_the_groups():
    rules = render_rules(FLAGS, AlertOptions())
    crd = prometheus_rule(rules, AlertOptions(rule_labels=(("release", "prom"),)))
    assert crd["spec"] is rules and crd["metadata"]["labels"]["release"] == "prom"


def test_alertmanager_routes_critical_alerts_to_their_receiver():
    config = alertmanager_config("http://hook/x")
    route = config["route"]
    assert route["routes"][0]["matchers"] == ['severity="critical"']
    urls = {r["webhook_configs"][0]["url"] for r in config["receivers"]}
    assert urls == {"http://hook/x"}
