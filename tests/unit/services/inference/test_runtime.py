"""Start-up checks: every dictionary must match the served model."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
from fixtures_model import MLP_ID, RESID_ID

from featurewatch.errors import BundleError, ConfigError, ModelError
from featurewatch.services.inference.runtime import load_runtime, serving_spec


def test_loads_model_dictionaries_and_limits(runtime, tiny_config):
    assert list(runtime.dictionaries) == [MLP_ID, RESID_ID]
    assert runtime.binding.model_id == "fixture-1l"
    assert runtime.context_length == 2048 and runtime.vocab_size == 400
    assert runtime.eos_ids == frozenset()
    assert runtime.dictionaries[MLP_ID].features.present
    assert not runtime.dictionaries[RESID_ID].features.present
    limits = serving_spec(runtime, tiny_config).limits
    assert limits.max_prompt_tokens == 2047 and limits.max_new_tokens == 256


def test_dictionary_of_another_model_is_refused(tiny, tiny_config):
    cfg = dataclasses.replace(tiny_config, dictionaries=(str(tiny.other_bundle),))
    with pytest.raises(BundleError, match="trained on another model"):
        load_runtime(cfg)


def test_duplicate_dictionary_id_and_no_dictionary(tiny, tiny_config, tmp_path):
    copy = shutil.copytree(tiny.mlp_bundle, tmp_path / "copy")
    cfg = dataclasses.replace(tiny_config, dictionaries=(str(tiny.mlp_bundle), str(copy)))
    with pytest.raises(ConfigError, match="two bundles have dictionary_id 'fx-mlp'"):
        load_runtime(cfg)
    with pytest.raises(ConfigError, match="at least one"):
        load_runtime(dataclasses.replace(tiny_config, dictionaries=()))


def test_hook_point_width_mismatch_is_refused(tiny, tiny_config, tmp_path):
    bundle = shutil.copytree(tiny.resid_bundle, tmp_path / "moved")
    cfg_path = bundle / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["featurewatch"]["hook_point"] = "blocks.0.mlp.hook_post"  # width 128, not 48
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(BundleError, match="has width 128"):
        load_runtime(dataclasses.replace(tiny_config, dictionaries=(str(bundle),)))
    cfg["featurewatch"]["hook_point"] = "blocks.3.hook_resid_post"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="1 layers"):
        load_runtime(dataclasses.replace(tiny_config, dictionaries=(str(bundle),)))


def test_missing_model_directory(tiny_config, tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        load_runtime(dataclasses.replace(tiny_config, model=str(tmp_path / "nothing")))
