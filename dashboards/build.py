"""Build dashboards/featurewatch.json (Grafana) from one list of panels and their PromQL.

Run `python dashboards/build.py` after editing PANELS; a test checks the JSON is up to date.
`panel_queries()` gives every panel's PromQL with the template variables filled in, for
tests that run each query against a live Prometheus.

Aggregates exported by the monitor are the same on every replica (they live in Redis), so
queries combine replicas with `max by (...)`; per-process counters (inference) use `sum`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
OUTPUT = HERE / "featurewatch.json"
UID = "featurewatch"
DS = {"type": "prometheus", "uid": "${datasource}"}
D = 'dictionary=~"$dictionary"'
M = "featurewatch_monitor_"
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    options: dict = field(default_factory=dict)


def _latency(metric: str, title: str) -> Panel:
    return Panel(title, tuple(
        Query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{RATE})))", f"p{p}")
        for q, p in ((0.5, 50), (0.95, 95), (0.99, 99))), unit="s", width=8,
        description="Percentiles over all inference replicas.")


ROWS: list[tuple[str, list[Panel]]] = [
    ("Flagged features", [
        Panel("Flagged feature firing rate (monitor window)", (Query(
            f"max by (dictionary, feature, name) ({M}flagged_feature_firing_rate{{{D}}})",
            "{{dictionary}} #{{feature}} {{name}}"),), unit="percentunit",
            description="Fraction of tokens on which each flagged feature fired."),
        Panel("Flagged feature hits per second", (Query(
            f"max by (dictionary, feature, name) "
            f"(rate({M}flagged_feature_hits_total{{{D}}}{RATE}))",
            "{{dictionary}} #{{feature}} {{name}}"),), unit="reqps",
            description="Trace events in which the feature reached the flag's min_activation."),
        Panel("Flagged feature max activation", (Query(
            f"max by (dictionary, feature, name) ({M}flagged_feature_max_activation{{{D}}})",
            "{{dictionary}} #{{feature}} {{name}}", instant=True),), kind="table", width=12),
        Panel("Firing alerts", (Query(
            'sum by (alertname, severity, dictionary, feature) (ALERTS{alertstate="firing"})',
            instant=True),), kind="table", width=12,
            description="Alerts Prometheus is firing now (Alertmanager routes them)."),
    ]),
    ("Features", [
        Panel("Top features (monitor window)", (
            Query(f"max by (dictionary, rank) ({M}top_feature_id{{{D}}})", instant=True),
            Query(f"max by (dictionary, rank) ({M}top_feature_firing_rate{{{D}}})",
                  instant=True)), kind="table", width=8,
            description="Feature id and firing rate at each rank (no per-feature series)."),
        Panel("Drift from training densities", (Query(
            f"max by (dictionary) ({M}drift_js_divergence{{{D}}})", "{{dictionary}}"),),
            unit="none", width=8,
            description="Jensen-Shannon divergence (bits, 0..1) between live firing and the "
                        "densities recorded at training time."),
        Panel("Fraction of the dictionary firing", (Query(
            f"max by (dictionary) ({M}features_fired_fraction{{{D}}})", "{{dictionary}}"),),
            unit="percentunit", width=8),
    ]),
    ("Traffic and latency", [
        Panel("Tokens per second", (
            Query(f"max by (dictionary) (rate({M}tokens_observed_total{{{D}}}{RATE}))",
                  "observed {{dictionary}}"),
            Query(f"sum(rate(featurewatch_inference_tokens_generated_total{RATE}))",
                  "generated")), unit="short", width=8),
        _latency("featurewatch_inference_time_to_first_token_seconds", "Time to first token"),
        _latency("featurewatch_inference_inter_token_latency_seconds", "Inter-token latency"),
    ]),
    ("Pipeline", [
        Panel("Consumer lag and pending entries", (
            Query(f"max by (dictionary) ({M}consumer_lag{{{D}}})", "lag {{dictionary}}"),
            Query(f"max by (dictionary) ({M}pending_events{{{D}}})",
                  "pending {{dictionary}}")), width=8),
        Panel("Trace events per second", (
            Query(f"max by (dictionary) (rate({M}events_processed_total{{{D}}}{RATE}))",
                  "counted {{dictionary}}"),
            Query(f"max by (dictionary) (rate({M}events_dead_lettered_total{{{D}}}{RATE}))",
                  "dead-lettered {{dictionary}}"),
            Query(f"max by (dictionary) (rate({M}events_duplicate_total{{{D}}}{RATE}))",
                  "duplicates {{dictionary}}"),
            Query("sum by (reason) "
                  f"(rate(featurewatch_inference_trace_events_dropped_total{RATE}))",
                  "dropped by inference ({{reason}})")), unit="reqps", width=8),
        Panel("Monitor replicas reaching Redis", (Query(f"sum({M}redis_up)", "replicas"),),
              kind="stat", width=8),
    ]),
]


def _target(query: Query, ref: str) -> dict:
    target = {"refId": ref, "datasource": DS, "expr": query.expr, "legendFormat": query.legend,
              "range": not query.instant, "instant": query.instant}
    if query.instant:
        target["format"] = "table"
    return target


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict:
    out = {
        "id": pid, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DS, "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(q, chr(ord("A") + i)) for i, q in enumerate(panel.queries)],
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": panel.options,
    }
    if panel.kind == "table" and len(panel.queries) > 1:
        out["transformations"] = [{"id": "merge", "options": {}}]
    return out


def _templating() -> dict:
    query = f"label_values({M}tokens_observed_total, dictionary)"
    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource",
         "query": "prometheus", "current": {}, "hide": 0, "refresh": 1},
        {"name": "dictionary", "label": "Dictionary", "type": "query", "datasource": DS,
         "definition": query, "query": {"query": query, "refId": "dictionary"},
         "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*", "current": {},
         "sort": 1},
    ]}


def build() -> dict:
    """The dashboard as a dict (rows become collapsed=false row panels)."""
    panels, pid, y = [], 1, 0
    for title, row in ROWS:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y, x, line = pid + 1, y + 1, 0, 0
        for panel in row:
            if x + panel.width > 24:
                x, y = 0, y + line
            panels.append(_panel(panel, pid, x, y))
            pid, x, line = pid + 1, x + panel.width, max(line, panel.height)
        y += line
    return {
        "uid": UID, "title": "featurewatch", "tags": ["featurewatch"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"}, "templating": _templating(),
        "annotations": {"list": []}, "panels": panels,
    }


def panel_queries(dictionary: str = ".*", rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query, template variables substituted."""
    return [(panel.title, q.expr.replace("$dictionary", dictionary)
             .replace("$__rate_interval", rate_interval))
            for _, row in ROWS for panel in row for q in panel.queries]


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT} ({sum(len(r) for _, r in ROWS)} panels)\n")
