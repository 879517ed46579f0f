"""Layered configuration (defaults < TOML < environment < flags) and the shared bounds check."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from featurewatch.config import check_fields, load_config
from featurewatch.errors import ConfigError


@dataclass(frozen=True)
class Knobs:
    """A config with one field of each bound."""

    steps: int = 10
    """Must be positive."""
    warmup: int = 0
    """Must be >= 0."""
    rate: float = 0.5
    """Free."""

    def __post_init__(self) -> None:
        check_fields(self, "knobs", positive=("steps",), non_negative=("warmup",))


def test_layers_override_in_order(tmp_path, monkeypatch):
    toml = tmp_path / "c.toml"
    toml.write_text("[knobs]\nsteps = 20\nwarmup = 3\nrate = 0.25\n")
    monkeypatch.setenv("KNOBS_WARMUP", "5")
    cfg = load_config(Knobs, file=toml, table="knobs", env_prefix="KNOBS_",
                      overrides={"rate": 0.75})
    assert (cfg.steps, cfg.warmup, cfg.rate) == (20, 5, 0.75)


@pytest.mark.parametrize(("fields", "message"), [
    ({"steps": 0}, "knobs.steps=0 must be positive"),
    ({"steps": -3}, "knobs.steps=-3 must be positive"),
    ({"warmup": -1}, "knobs.warmup=-1 must be >= 0"),
])
def test_out_of_bounds_fields_are_named_with_their_value(fields, message):
    with pytest.raises(ConfigError) as err:
        Knobs(**fields)
    assert str(err.value) == message


def test_bounds_hold_for_values_from_the_environment(monkeypatch):
    monkeypatch.setenv("KNOBS_STEPS", "0")
    with pytest.raises(ConfigError, match="knobs.steps=0 must be positive"):
        load_config(Knobs, env_prefix="KNOBS_")
    assert Knobs(steps=1, warmup=0).warmup == 0  # the bounds themselves are allowed
