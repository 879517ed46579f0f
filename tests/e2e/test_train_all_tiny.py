"""`featurewatch train all --preset tiny`: the whole chain, then a rerun that skips it all."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from featurewatch.stack import featurewatch_argv
from featurewatch.training.bundle import load_bundle, model_binding
from featurewatch.training.presets import preset_values

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def _train_all(artifacts: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        featurewatch_argv("train", "all", "--preset", "tiny", "--artifacts", str(artifacts),
                          "--quiet"),
        capture_output=True, text=True, timeout=900)


def test_tiny_chain_builds_every_artifact_then_skips(tiny_training) -> None:
    # The session fixture (tests/e2e/conftest.py) ran the chain once for every e2e test.
    art, first = tiny_training.artifacts, tiny_training.result
    assert first.returncode == 0, first.stderr[-3000:]
    for path in ("corpus/manifest.json", "tokenizer/tokenizer.json", "tokens/train.npy",
                 "model/model.safetensors", "activations/blocks.0.mlp.hook_post/pool.json",
                 "report/analysis.json", "report/index.html", "state.json"):
        assert (art / path).is_file(), path
    binding = model_binding(art / "model")
    for sae in preset_values("tiny")["sae"]:
        bundle = load_bundle(art / "dictionaries" / sae["name"], expect=binding)
        assert bundle.dictionary.d_sae == sae["d_sae"]
        assert 0 < bundle.metrics["l0"] < sae["d_sae"]
        assert len(bundle.metrics["feature_density"]) == sae["d_sae"]
        history = json.loads((bundle.path / "history.json").read_text())
        assert history and history[-1]["step"] >= history[0]["step"]
        assert bundle.features_path.is_file()
    assert "wall time" in first.stdout
    second = _train_all(art)
    assert second.returncode == 0, second.stderr[-3000:]
    state = json.loads((art / "state.json").read_text())
    assert second.stderr.count("up to date") == len(state["steps"])
