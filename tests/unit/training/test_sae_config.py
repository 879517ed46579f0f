"""SaeConfig: validation names the field, recipe defaults fill the unset fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurewatch.config import load_config
from featurewatch.errors import ConfigError
from featurewatch.training.sae_config import (
    RECIPE_DEFAULTS,
    RECIPES,
    RECOMMENDED,
    SaeConfig,
    resolve,
)


@pytest.mark.parametrize(("values", "field"), [
    ({"l1_coefficient": -0.1}, "sae.l1_coefficient"),
    ({"recipe": "topk", "d_sae": 16, "k": 17}, "sae.k"),
    ({"recipe": "topk", "d_sae": 16, "k": 4, "k_aux": 17}, "sae.k_aux"),
    ({"recipe": "relu-l1-2025"}, "sae.recipe"),
    ({"d_sae": 0}, "sae.d_sae"),
    ({"steps": -5}, "sae.steps"),
    ({"batch_size": 0}, "sae.batch_size"),
    ({"lr": 0.0}, "sae.lr"),
    ({"lr_decay": 1.5}, "sae.lr_decay"),
    ({"l1_warmup": -0.1}, "sae.l1_warmup"),
    ({"dead_window": 2.0}, "sae.dead_window"),
    ({"resample_at": (0.5, 1.0)}, "sae.resample_at"),
    ({"adam_betas": (0.9, 1.0)}, "sae.adam_betas"),
    ({"device": "tpu"}, "sae.device"),
    ({"name": ""}, "sae.name"),
])
def test_bad_values_raise_config_error_naming_the_field(values, field) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        SaeConfig(**values)


def test_k_larger_than_d_sae_is_fine_for_relu_recipes() -> None:
    assert SaeConfig(recipe="relu-l1-2024", d_sae=16, k=32).k == 32


@pytest.mark.parametrize("recipe", RECIPES)
def test_resolve_fills_recipe_defaults_and_keeps_explicit_values(recipe) -> None:
    cfg = resolve(SaeConfig(recipe=recipe, lr=3e-3))
    assert cfg.lr == 3e-3
    for name, value in RECIPE_DEFAULTS[recipe].items():
        if name != "lr":
            assert getattr(cfg, name) == value


def test_2024_recipe_defaults_match_the_paper() -> None:
    cfg = resolve(SaeConfig(recipe="relu-l1-2024"))
    assert (cfg.lr, cfg.lr_decay, cfg.grad_clip, cfg.l1_warmup) == (5e-5, 0.2, 1.0, 0.05)
    assert cfg.adam_betas == (0.9, 0.999)


def test_load_config_from_toml_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "sae.toml"
    path.write_text('[sae]\nrecipe = "topk"\nk = 8\nresample_at = [0.1, 0.2]\n')
    cfg = load_config(SaeConfig, file=path, table="sae", overrides={"d_sae": 64, "lr": None})
    assert (cfg.recipe, cfg.k, cfg.d_sae, cfg.lr, cfg.resample_at) == (
        "topk", 8, 64, None, (0.1, 0.2))
    path.write_text('[sae]\nl1_coefficient = -1\n')
    with pytest.raises(ConfigError, match="l1_coefficient"):
        load_config(SaeConfig, file=path, table="sae")


@pytest.mark.parametrize("preset", ["tiny", "default", "paper"])
def test_recommended_values_are_valid_configs(preset) -> None:
    cfg = resolve(SaeConfig(**RECOMMENDED[preset]))
    assert cfg.d_sae > 0 and cfg.lr > 0
