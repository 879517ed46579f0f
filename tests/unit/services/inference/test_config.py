"""InferenceConfig: layered sources and refusals naming the field."""

from __future__ import annotations

import pytest

from featurewatch.errors import ConfigError
from featurewatch.services.inference.config import InferenceConfig, load_inference_config


def test_layers_file_then_env_then_flags(tmp_path, monkeypatch):
    path = tmp_path / "fw.toml"
    path.write_text('[inference]\nport = 6000\nmax_new_tokens = 100\ndictionaries = ["a", "b"]\n')
    monkeypatch.setenv("FEATUREWATCH_INFERENCE_PORT", "7000")
    monkeypatch.setenv("FEATUREWATCH_INFERENCE_FAIL_CLOSED", "true")
    cfg = load_inference_config(path, {"max_new_tokens": 80, "model": None})
    assert cfg.port == 7000                   # env beats file
    assert cfg.max_new_tokens == 80           # flags beat file
    assert cfg.dictionaries == ("a", "b")
    assert cfg.fail_closed is True
    assert cfg.model == InferenceConfig().model  # None flag keeps the default


@pytest.mark.parametrize(("overrides", "field"), [
    ({"max_concurrent_streams": 0}, "max_concurrent_streams"),
    ({"default_new_tokens": 500, "max_new_tokens": 100}, "default_new_tokens"),
    ({"redis_backoff_s": 0}, "redis_backoff_s"),
    ({"port": 70000}, "port"),
    ({"fail_closed": True, "redis_url": ""}, "fail_closed"),
    ({"max_new_tokens": "many"}, "max_new_tokens"),
])
def test_bad_values_name_the_field(overrides, field):
    with pytest.raises(ConfigError, match=field):
        load_inference_config(None, overrides)


def test_unknown_key_in_file_is_refused(tmp_path):
    path = tmp_path / "fw.toml"
    path.write_text("[inference]\nmax_tokens = 3\n")
    with pytest.raises(ConfigError, match="max_tokens"):
        load_inference_config(path)
