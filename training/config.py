"""The training job's whole configuration: one frozen `TrainConfig` of per-step configs.

Layers, later wins: a preset ("tiny", "default", "paper") < the TOML file (`--config`) <
environment variables `FEATUREWATCH_<TABLE>_<FIELD>` < command-line flags. The TOML file has one
table per step and an array of `[[sae]]` tables, one per dictionary to train:

    preset = "default"          # optional; a --preset flag wins
    [lm]
    steps = 3000
    [[sae]]
    name = "a1-4096"           # an entry named like a preset dictionary starts from it
    l1_coefficient = 5.0

The sae/evaluate/analyze configs live in their own modules and are imported only when the
configuration is built, never at import time.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurewatch.config import load_config, read_toml
from featurewatch.errors import ConfigError
from featurewatch.training.activations import ActivationsConfig
from featurewatch.training.corpus import CorpusConfig
from featurewatch.training.lm import LMConfig
from featurewatch.training.presets import PRESET_NAMES, preset_values
from featurewatch.training.tokenizer import TokenizerConfig

ENV_PREFIX = "FEATUREWATCH_"
# table -> (module, class) of the step configs owned by other modules.
LAZY_CLASSES = {
    "sae": ("featurewatch.training.sae_config", "SaeConfig"),
    "evaluate": ("featurewatch.training.evaluate", "EvaluateConfig"),
    "analyze": ("featurewatch.training.analyze", "AnalyzeConfig"),
}
OWN_CLASSES = {"corpus": CorpusConfig, "tokenizer": TokenizerConfig, "lm": LMConfig,
               "activations": ActivationsConfig}
TOP_KEYS = {"preset", *OWN_CLASSES, *LAZY_CLASSES}


@dataclass(frozen=True)
class TrainConfig:
    """Every step's configuration, as resolved from preset, file, environment and flags."""

    corpus: CorpusConfig
    """Step 1: which text, how much."""
    tokenizer: TokenizerConfig
    """Step 2: BPE vocabulary and context length."""
    lm: LMConfig
    """Step 3: the language model."""
    activations: ActivationsConfig
    """Step 4: hook point and pool size."""
    saes: tuple[Any, ...]
    """Step 5: one SaeConfig per dictionary to train."""
    evaluate: Any
    """Step 6: EvaluateConfig."""
    analyze: Any
    """Step 8: AnalyzeConfig."""
    preset: str = "default"
    """The preset the values started from."""


def config_class(table: str) -> type:
    """The config dataclass of a step table (imported on first use)."""
    if table in OWN_CLASSES:
        return OWN_CLASSES[table]
    module, name = LAZY_CLASSES[table]
    return getattr(importlib.import_module(module), name)


def _table(table: str, preset: dict[str, Any], file: Path | None,
           overrides: dict[str, Any] | None) -> Any:
    cls = config_class(table)
    base = load_config(cls, overrides=preset.get(table, {}))
    return load_config(cls, file=file, table=table, env_prefix=f"{ENV_PREFIX}{table.upper()}_",
                       overrides=overrides, base=base)


def _sae_entries(preset: dict[str, Any], data: dict[str, Any], file: Path | None
                 ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(base values, file values) per dictionary: the file's [[sae]] list replaces the preset's."""
    by_name = {entry["name"]: entry for entry in preset.get("sae", [])}
    if "sae" not in data:
        return [(entry, {}) for entry in preset.get("sae", [])]
    entries = data["sae"]
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"config file {file}: sae must be an array of tables ([[sae]])")
    out = []
    for i, entry in enumerate(entries):
        if "name" not in entry:
            raise ConfigError(f"config file {file}: [[sae]] entry {i + 1} needs a name")
        out.append((by_name.get(entry["name"], {}), entry))
    return out


def _saes(preset: dict[str, Any], data: dict[str, Any], file: Path | None,
          overrides: dict[str, Any] | None, only: tuple[str, ...]) -> tuple[Any, ...]:
    cls = config_class("sae")
    saes = []
    for base_values, file_values in _sae_entries(preset, data, file):
        base = load_config(cls, overrides=base_values)
        try:
            from_file = load_config(cls, overrides=file_values, base=base)
        except ConfigError as exc:
            raise ConfigError(f"config file {file}: [[sae]] {file_values['name']!r}: "
                              f"{exc}") from None
        saes.append(load_config(cls, env_prefix=f"{ENV_PREFIX}SAE_", overrides=overrides,
                                base=from_file))
    if only:
        known = [s.name for s in saes]
        missing = [n for n in only if n not in known]
        if missing:
            raise ConfigError(f"dictionary {missing[0]!r} is not configured; configured: {known}")
        saes = [s for s in saes if s.name in only]
    return tuple(saes)


def load_train_config(preset: str | None = None, file: str | Path | None = None,
                      overrides: dict[str, dict[str, Any]] | None = None,
                      only_saes: tuple[str, ...] = ()) -> TrainConfig:
    """Resolve the TrainConfig: preset < TOML `file` < environment < `overrides[table]`.

    `overrides["sae"]` applies to every dictionary; `only_saes` keeps the named ones.
    """
    path = Path(file) if file is not None else None
    data = read_toml(path) if path is not None else {}
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise ConfigError(f"config file {path}: unknown table {sorted(unknown)[0]!r}; "
                          f"known: {sorted(TOP_KEYS)}")
    name = preset or data.get("preset") or "default"
    if name not in PRESET_NAMES:
        raise ConfigError(f"preset {name!r} is not one of {list(PRESET_NAMES)}")
    values, overrides = preset_values(name), overrides or {}
    tables = {t: _table(t, values, path, overrides.get(t))
              for t in ("corpus", "tokenizer", "lm", "activations", "evaluate", "analyze")}
    saes = _saes(values, data, path, overrides.get("sae"), only_saes)
    names = [s.name for s in saes]
    if len(set(names)) != len(names):
        raise ConfigError(f"dictionary names must be unique, got {names}")
    return TrainConfig(saes=saes, preset=name, **tables)


def describe(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data (for logs and `--show-config`)."""
    out = dataclasses.asdict(cfg)
    out["saes"] = list(out["saes"])
    return out
