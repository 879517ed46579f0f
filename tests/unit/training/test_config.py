"""TrainConfig: preset < TOML file < environment < flags, with errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurewatch.errors import ConfigError
from featurewatch.training.config import describe, load_train_config
from featurewatch.training.presets import PRESET_NAMES, preset_values


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(text)
    return path


def test_presets_resolve_with_their_values() -> None:
    for name in PRESET_NAMES:
        values = preset_values(name)
        cfg = load_train_config(name)
        assert cfg.preset == name
        assert cfg.tokenizer.vocab_size == values["tokenizer"]["vocab_size"]
        assert [s.name for s in cfg.saes] == [s["name"] for s in values["sae"]]
        assert [s.d_sae for s in cfg.saes] == [s["d_sae"] for s in values["sae"]]
    assert load_train_config().preset == "default"
    tiny = load_train_config("tiny")
    assert tiny.corpus.max_bytes < load_train_config("default").corpus.max_bytes
    assert describe(tiny)["saes"][0]["name"] == tiny.saes[0].name


def test_file_env_and_flags_layer_in_order(tmp_path: Path, monkeypatch) -> None:
    path = _toml(tmp_path, 'preset = "tiny"\n[lm]\nsteps = 77\nlr = 0.01\n'
                           '[corpus]\nmax_bytes = 12345\n')
    cfg = load_train_config(None, path)
    assert (cfg.preset, cfg.lm.steps, cfg.lm.lr, cfg.corpus.max_bytes) == ("tiny", 77, 0.01, 12345)
    assert cfg.tokenizer.vocab_size == preset_values("tiny")["tokenizer"]["vocab_size"]
    monkeypatch.setenv("FEATUREWATCH_LM_STEPS", "88")
    monkeypatch.setenv("FEATUREWATCH_LM_LR", "0.02")
    cfg = load_train_config(None, path, {"lm": {"steps": 99, "lr": None}})
    assert (cfg.lm.steps, cfg.lm.lr) == (99, 0.02)   # flag > env > file; unset flag ignored
    assert load_train_config("default", path).preset == "default"  # --preset beats the file


def test_sae_tables_start_from_preset_entries(tmp_path: Path) -> None:
    first = preset_values("default")["sae"][0]
    path = _toml(tmp_path, f'[[sae]]\nname = "{first["name"]}"\nsteps = 5\n'
                           '[[sae]]\nname = "extra"\nd_sae = 256\n')
    cfg = load_train_config("default", path)
    assert [s.name for s in cfg.saes] == [first["name"], "extra"]
    assert (cfg.saes[0].steps, cfg.saes[0].d_sae) == (5, first["d_sae"])
    assert cfg.saes[1].d_sae == 256
    cfg = load_train_config("default", path, {"sae": {"steps": 9}}, only_saes=("extra",))
    assert [(s.name, s.steps) for s in cfg.saes] == [("extra", 9)]


@pytest.mark.parametrize("text,message", [
    ("[lm]\nstepz = 3\n", "unknown field 'stepz'"),
    ("[lm]\nsteps = 'many'\n", "steps='many' is not a valid int"),
    ("[lmm]\nsteps = 3\n", "unknown table 'lmm'"),
    ("[[sae]]\nd_sae = 3\n", r"\[\[sae\]\] entry 1 needs a name"),
    ('[[sae]]\nname = "a"\n[[sae]]\nname = "a"\n', "names must be unique"),
    ('[[sae]]\nname = "a"\nbogus = 1\n', r"\[\[sae\]\] 'a'.*unknown field 'bogus'"),
    ("[tokenizer]\nvocab_size = 10\n", "tokenizer.vocab_size=10"),
    ('preset = "huge"\n', "preset 'huge' is not one of"),
])
def test_bad_config_names_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, _toml(tmp_path, text))


def test_unknown_dictionary_selection() -> None:
    with pytest.raises(ConfigError, match="dictionary 'nope' is not configured"):
        load_train_config("tiny", only_saes=("nope",))
