"""Fixtures of the inference unit tests: the tiny model + bundles, loaded once per session."""

from __future__ import annotations

import pytest
import torch
from fixtures_model import shared_tiny_artifacts

from featurewatch.services.inference.config import InferenceConfig
from featurewatch.services.inference.runtime import load_runtime, serving_spec


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """Paths of the tiny model directory and its bundles."""
    torch.set_num_threads(1)
    return shared_tiny_artifacts(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_config(tiny) -> InferenceConfig:
    return InferenceConfig(model=str(tiny.model_dir),
                           dictionaries=(str(tiny.mlp_bundle), str(tiny.resid_bundle)),
                           torch_threads=1, redis_url="", max_new_tokens=256)


@pytest.fixture(scope="session")
def runtime(tiny_config):
    """The loaded model and both dictionaries (shared: tests must not modify it)."""
    return load_runtime(tiny_config)


@pytest.fixture(scope="session")
def spec(runtime, tiny_config):
    return serving_spec(runtime, tiny_config)
