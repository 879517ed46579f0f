"""Rendered alerts: promtool check rules, promtool test rules, amtool check-config."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from servers import require_binary
from trace_events import write_bundle

from featurewatch.errors import FlagError
from featurewatch.services.monitor.alerts import (
    ALERTMANAGER_FILE,
    PROMETHEUS_RULE_FILE,
    RULES_FILE,
)
from featurewatch.services.monitor.alerts_cli import alerts

pytestmark = pytest.mark.integration
DATA = Path(__file__).parent / "data"


def render(out: Path, *extra: str):
    return CliRunner().invoke(alerts, ["render", "--flags", str(DATA / "flags.yaml"), "--out",
                                       str(out), "--runbook-base",
                                       "https://runbooks.test/featurewatch", *extra])


@pytest.fixture
def rendered(tmp_path):
    result = render(tmp_path, "--rule-label", "release=prometheus")
    assert result.exit_code == 0, result.output
    return tmp_path


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True)


def test_rules_pass_promtool_check(rendered):
    out = run(require_binary("promtool"), "check", "rules", str(rendered / RULES_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 9 rules found" in out.stdout  # 2 flags + run-time rule + 6 operational


def test_rule_unit_tests_pass(rendered):
    shutil.copy(DATA / "alerts_test.yml", rendered)
    out = run(require_binary("promtool"), "test", "rules", str(rendered / "alerts_test.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_prometheus_rule_carries_the_same_groups(rendered):
    rules = yaml.safe_load((rendered / RULES_FILE).read_text())
    crd = yaml.safe_load((rendered / PROMETHEUS_RULE_FILE).read_text())
    assert crd["apiVersion"] == "monitoring.coreos.com/v1" and crd["kind"] == "PrometheusRule"
    assert crd["metadata"]["labels"]["release"] == "prometheus"
    assert crd["spec"] == rules
    severities = {r["labels"].get("severity") for g in rules["groups"] for r in g["rules"]}
    assert {"critical", "warning", "info"} <= severities
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_alertmanager_example_passes_amtool(rendered):
    out = run(require_binary("amtool"), "check-config", str(rendered / ALERTMANAGER_FILE))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_rejects_a_broken_rule_file(rendered):
    # The check above can fail: a rule file with a PromQL error is refused.
    path = rendered / RULES_FILE
    path.write_text(path.read_text().replace("> 0", "> > 0", 1))
    out = run(require_binary("promtool"), "check", "rules", str(path))
    assert out.returncode != 0


def test_render_checks_flags_against_bundles(tmp_path):
    small = write_bundle(tmp_path / "small", "d1", 3)
    result = render(tmp_path / "out", "--dictionary", str(small))
    assert isinstance(result.exception, FlagError)
    assert "feature 3 is out of range: dictionary 'd1' has d_sae=3" in str(result.exception)
    other = write_bundle(tmp_path / "other", "d2", 100)
    result = render(tmp_path / "out", "--dictionary", str(other))
    assert "dictionary 'd1' is unknown (known: ['d2'])" in str(result.exception)
    ok = write_bundle(tmp_path / "ok", "d1", 100)
    assert render(tmp_path / "out", "--dictionary", str(ok)).exit_code == 0
