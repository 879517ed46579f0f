"""`featurewatch bench sae`: consistent figures, clear errors, and the fused ReLU step it times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sae_data import one_thread  # noqa: F401 (autouse fixture)

from featurewatch.cli import cli
from featurewatch.errors import ConfigError
from featurewatch.training.bench import step_flops
from featurewatch.training.dictionary import Dictionary
from featurewatch.training.sae_config import SaeConfig
from featurewatch.training.sae_recipes import ReluCoder, TopK

TINY = ["--d-sae", "128", "--batch-size", "64", "--steps", "3", "--warmup", "1",
        "--peak-size", "64", "--json"]


def _bench(*args: str):
    return CliRunner().invoke(cli, ["bench", "sae", *args])


@pytest.fixture(scope="module")
def npy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "acts.npy"
    np.save(path, np.random.default_rng(0).standard_normal((512, 32), np.float32))
    return path


@pytest.mark.parametrize("recipe", ["relu-l1-2023", "relu-l1-2024", "topk"])
def test_figures_are_positive_and_consistent(npy: Path, recipe: str) -> None:
    result = _bench("--activations", str(npy), "--recipe", recipe, *TINY)
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert (r["d_in"], r["d_sae"], r["batch_size"], r["steps"]) == (32, 128, 64, 3)
    assert r["source"] == str(npy) and r["threads"] == 1
    for key in ("elapsed_s", "tokens_per_s", "achieved_gflops", "bf16_peak_gflops",
                "fp32_peak_gflops", "fraction_of_peak"):
        assert r[key] > 0, key
    assert r["tokens_per_s"] == pytest.approx(64 * 3 / r["elapsed_s"], rel=1e-9)
    assert r["achieved_gflops"] == pytest.approx(
        r["flops_per_step"] * 3 / r["elapsed_s"] / 1e9, rel=1e-9)
    assert r["fraction_of_peak"] == pytest.approx(r["achieved_gflops"] / r["bf16_peak_gflops"],
                                                  rel=1e-9)


def test_flops_count_the_products_each_recipe_does() -> None:
    relu = SaeConfig(recipe="relu-l1-2024", d_sae=128, batch_size=64)
    assert step_flops(relu, 32) == 5 * 2 * 64 * 32 * 128  # 2 forward + 3 backward products
    topk = SaeConfig(recipe="topk", d_sae=128, batch_size=64, k=8)
    assert step_flops(topk, 32) == 2 * 2 * 64 * 32 * 128 + 6 * 64 * 8 * 32


def test_the_table_names_every_figure(npy: Path) -> None:
    result = _bench("--activations", str(npy), *TINY[:-1])
    assert result.exit_code == 0, result.output
    for row in ("tokens/s", "achieved GFLOP/s", "bf16 matmul peak GFLOP/s",
                "fraction of bf16 peak", "fp32 matmul peak GFLOP/s (reference)", "activations"):
        assert row in result.stdout


def test_bad_inputs_are_config_errors_naming_the_file(tmp_path: Path, npy: Path) -> None:
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(100, np.float32))
    cases = [(["--activations", str(tmp_path / "absent.npy")], "absent.npy does not exist"),
             (["--activations", str(flat)], f"{flat}: expected shape [N, d_in], got [100]"),
             (["--activations", str(npy), "--batch-size", "1000"],
              f"{npy}: holds 512 rows, fewer than --batch-size 1000"),
             (["--steps", "0"], "--steps=0 must be positive")]
    for args, message in cases:
        result = _bench(*args)
        assert isinstance(result.exception, ConfigError), (args, result.output)
        assert message in str(result.exception)


def test_errors_reach_the_user_as_one_line_and_exit_2(tmp_path, capsys, monkeypatch) -> None:
    from featurewatch.cli import main

    missing = tmp_path / "missing.safetensors"
    monkeypatch.setattr("sys.argv", ["featurewatch", "bench", "sae", "--activations",
                                     str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == f"error: activation pool {missing} does not exist\n"


@pytest.mark.parametrize("autocast", [False, True])
def test_fused_relu_coder_matches_autograd(autocast: bool) -> None:
    """The hand-written backward the benchmark's speed rests on equals autograd's."""
    torch.manual_seed(0)
    d = Dictionary(32, 128)
    with torch.no_grad():
        d.b_enc.normal_()
        d.b_dec.normal_()
    x, weights = torch.randn(64, 32), torch.rand(128)
    params = list(d.parameters())

    def reference() -> torch.Tensor:
        f = torch.relu(x @ d.W_enc + d.b_enc - d.b_dec @ d.W_enc)
        return ((f @ d.W_dec + d.b_dec - x) ** 2).sum() + f.sum(dim=0) @ weights

    def fused() -> torch.Tensor:
        dtype = torch.bfloat16 if autocast else torch.float32
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            x_hat, f_sum, _ = ReluCoder.apply(x, d.W_enc, d.b_enc - d.b_dec @ d.W_enc,
                                              d.W_dec, d.b_dec, dtype)
            return ((x_hat.float() - x) ** 2).sum() + f_sum @ weights

    tolerance = 3e-2 if autocast else 1e-5  # bf16 products vs float32 ones
    assert fused().item() == pytest.approx(reference().item(), rel=tolerance)
    for want, got in zip(torch.autograd.grad(reference(), params),
                         torch.autograd.grad(fused(), params), strict=True):
        assert got.dtype == torch.float32
        assert float((got - want).norm() / want.norm()) < tolerance


def test_topk_fired_marks_exactly_the_features_that_were_active() -> None:
    cfg = SaeConfig(recipe="topk", d_sae=64, k=4, batch_size=32)
    recipe = TopK(cfg, 16)
    d = recipe.build(torch.randn(256, 16), torch.Generator().manual_seed(0))
    x = torch.randn(32, 16)
    out = recipe.loss(d, x, 0, torch.zeros(64, dtype=torch.bool))
    active = (d.encode(x) > 0).any(dim=0)
    assert torch.equal(out.fired, active)
