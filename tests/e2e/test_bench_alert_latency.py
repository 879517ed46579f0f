"""`featurewatch bench monitor --alert-latency`: prompt → delivered alert, timed through `up`."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from featurewatch.errors import ConfigError
from featurewatch.services.monitor.bench import alert_latency, bench_monitor

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_alert_latency_is_measured_on_the_tiny_artifacts(tiny_training) -> None:
    latency = alert_latency(tiny_training.artifacts, "0s", timeout_s=120.0)
    assert latency["via"] == "alertmanager webhook"
    # The prompts are sent one after another, so the first one is the older. With `for: 0s`
    # the alert may arrive before the last prompt is done: from_last_prompt_s can be negative.
    assert latency["from_last_prompt_s"] < latency["from_first_prompt_s"]
    assert 0 < latency["from_first_prompt_s"] < 120


def test_untrained_artifacts_are_refused_before_anything_trains(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no trained model/ and dictionaries/"):
        alert_latency(tmp_path, "0s", timeout_s=10.0)
    refused = CliRunner().invoke(bench_monitor, ["--alert-latency", str(tmp_path)])
    assert isinstance(refused.exception, ConfigError)
    assert "redis-benchmark" not in refused.output  # refused before the ingest benchmark ran
    result = CliRunner().invoke(bench_monitor, ["--alert-latency", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.output
