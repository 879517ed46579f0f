"""`featurewatch train …`: step commands run, record state, skip unchanged work, name errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_models import save_tiny_model

from featurewatch.cli import cli

SMALL = """
[tokenizer]
vocab_size = 300
context_size = 16
[lm]
steps = 4
batch_size = 4
n_embd = 32
n_inner = 64
n_head = 2
eval_every = 4
eval_contexts = 8
threads = 1
[activations]
n_tokens = 500
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, list[str]]:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"{i}.txt").write_text(f"def function_{i}(x):\n    return x * {i}  # ok\n" * 5)
    (tmp_path / "train.toml").write_text(SMALL + f'[corpus]\nsources = ["{src}"]\n'
                                         "val_fraction = 0.25\n")
    common = ["--artifacts", str(tmp_path / "art"), "--preset", "tiny",
              "--config", str(tmp_path / "train.toml"), "--quiet"]
    return tmp_path / "art", common


def _invoke(*args: str):
    result = CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_data_steps_run_then_skip_then_rerun_on_change(setup) -> None:
    art, common = setup
    assert "corpus:" in _invoke("corpus", *common).output
    _invoke("tokenizer", *common)
    out = _invoke("lm", *common).output
    assert "val_loss=" in out and "tokens_per_second=" in out
    assert (art / "model" / "model.safetensors").is_file()
    state = json.loads((art / "state.json").read_text())
    assert set(state["steps"]) == {"corpus", "tokenizer", "lm"}
    again = _invoke("tokenizer", *common)
    assert "tokenizer: up to date" in again.output
    _invoke("corpus", *common, "--max-bytes", "3000")       # new corpus ...
    assert "tokenizer: done" in _invoke("tokenizer", *common).output  # ... new tokens
    assert "lm: done" in _invoke("lm", *common, "--steps", "2").output
    stats = json.loads((art / "model" / "train_stats.json").read_text())
    assert stats["config"]["steps"] == 2


def test_activations_of_another_hf_model(setup, tmp_path: Path) -> None:
    art, common = setup
    model = save_tiny_model("llama", tmp_path / "llama")
    _invoke("corpus", *common)
    _invoke("activations", *common, "--model", str(model), "--hook-point",
            "blocks.1.mlp.hook_post")
    pool = json.loads((art / "activations" / "blocks.1.mlp.hook_post" / "pool.json").read_text())
    assert (pool["d_in"], pool["n"], pool["model"]["model_dir"]) == (48, 500, str(model))
    cached = list((art / "tokens").glob("model-*/train-16.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[1] == 16


def test_print_config_and_help(setup) -> None:
    _, common = setup
    out = _invoke("lm", *common, "--steps", "123", "--print-config").output
    assert json.loads(out)["lm"]["steps"] == 123
    help_text = _invoke("--help").output
    for name in ("corpus", "tokenizer", "lm", "activations", "sae", "evaluate", "bundle",
                 "analyze", "all"):
        assert name in help_text


def test_errors_are_one_line_with_exit_status_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from featurewatch.cli import main; main()", "train", "tokenizer",
         "--artifacts", str(tmp_path / "empty"), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: step 'tokenizer' needs" in proc.stderr
    assert "run `featurewatch train corpus` first" in proc.stderr
