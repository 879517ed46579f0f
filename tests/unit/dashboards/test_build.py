"""The Grafana dashboard: generated file up to date, variables, layout, known metrics only."""

from __future__ import annotations

import json
import re

import pytest
from dashboard_build import DASHBOARDS, load_build
from prometheus_client import CollectorRegistry

from featurewatch.services.inference.telemetry import InferenceMetrics
from featurewatch.services.monitor.metrics import _families


@pytest.fixture(scope="module")
def build():
    return load_build()


def test_checked_in_json_is_the_build_output(build):
    assert (DASHBOARDS / "featurewatch.json").read_text() == build.render(), \
        "run `python dashboards/build.py`"


def test_datasource_and_dictionary_are_template_variables(build):
    dashboard = build.build()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert "label_values(" in variables["dictionary"]["definition"]
    assert variables["dictionary"]["includeAll"] and variables["dictionary"]["allValue"] == ".*"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_panels_do_not_overlap_and_ids_are_unique(build):
    panels = build.build()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = set()
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))


def test_required_panels_exist(build):
    titles = " | ".join(title for title, _ in build.panel_queries()).lower()
    for needed in ("flagged feature", "top features", "drift", "tokens per second",
                   "time to first token", "inter-token latency", "lag", "alerts"):
        assert needed in titles, needed


def exported_names() -> set[str]:
    names = set()
    for family in _families("300s").values():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    names.add("featurewatch_monitor_redis_up")
    registry = CollectorRegistry()
    InferenceMetrics(registry)
    for metric in registry.collect():
        names.update(sample.name for sample in metric.samples)
        if metric.type == "histogram":
            names.add(metric.name + "_bucket")
    return names


def test_queries_use_only_exported_metrics(build):
    known = exported_names()
    for title, expr in build.panel_queries():
        assert "$" not in expr, (title, expr)
        for name in re.findall(r"\bfeaturewatch_[a-z_]+", expr):
            assert name in known, (title, name)


def test_queries_never_split_the_feature_label_of_all_features(build):
    # a `feature` label exists only on flagged-feature series
    for title, expr in build.panel_queries():
        if "feature" in re.sub(r"featurewatch_\w+|flagged_feature\w*|top_feature\w*", "", expr):
            assert "flagged_feature" in expr or "ALERTS" in expr, title


def test_dashboard_is_valid_json_for_grafana(build):
    dashboard = json.loads(build.render())
    assert dashboard["uid"] == "featurewatch" and dashboard["schemaVersion"] >= 36
