"""MonitorConfig: layering and field validation."""

from __future__ import annotations

import pytest

from featurewatch.errors import ConfigError
from featurewatch.services.monitor.config import MonitorConfig, load_monitor_config


def test_defaults_are_valid_and_window_fits_retention():
    cfg = MonitorConfig()
    assert cfg.window_s <= cfg.retention_s
    assert cfg.retention_s % cfg.bucket_s == 0


def test_toml_then_env_then_flags(tmp_path, monkeypatch):
    toml = tmp_path / "fw.toml"
    toml.write_text('[monitor]\nbucket_s = 5\nretention_s = 600\nwindow_s = 60\ngroup = "g1"\n')
    monkeypatch.setenv("FEATUREWATCH_MONITOR_GROUP", "g2")
    monkeypatch.setenv("FEATUREWATCH_MONITOR_DICTIONARIES", "a,b")
    cfg = load_monitor_config(toml, {"window_s": 120, "group": None})
    assert (cfg.bucket_s, cfg.retention_s, cfg.window_s) == (5, 600, 120)
    assert cfg.group == "g2"
    assert cfg.dictionaries == ("a", "b")


def test_consumer_defaults_to_host_name():
    import socket

    assert MonitorConfig().consumer == socket.gethostname()
    assert MonitorConfig(consumer_name="m-1").consumer == "m-1"


@pytest.mark.parametrize(("fields", "message"), [
    ({"retention_s": 65}, "multiple of monitor.bucket_s"),
    ({"window_s": 7200}, "exceeds monitor.retention_s"),
    ({"batch_size": 0}, "monitor.batch_size=0 must be positive"),
    ({"claim_idle_s": 0}, "monitor.claim_idle_s=0 must be positive"),
    ({"metrics_port": 70000}, "valid TCP ports"),
    ({"redis_url": ""}, "monitor.redis_url"),
])
def test_invalid_fields_are_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        MonitorConfig(**fields)


def test_unknown_toml_field_is_an_error(tmp_path):
    toml = tmp_path / "fw.toml"
    toml.write_text("[monitor]\nbuckets = 5\n")
    with pytest.raises(ConfigError, match="unknown field 'buckets'"):
        load_monitor_config(toml)
