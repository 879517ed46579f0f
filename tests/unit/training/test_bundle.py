"""Dictionary bundles: round-trip, and every way loading can fail with a BundleError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from random_lms import random_lm
from safetensors.torch import load_file, save_file

from featurewatch.errors import BundleError, ModelError
from featurewatch.training.bundle import (
    CFG_FILE,
    FEATURES_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    ModelBinding,
    load_bundle,
    model_binding,
    save_bundle,
)
from featurewatch.training.dictionary import Dictionary

BINDING = ModelBinding("featurewatch-test", "ab" * 32)
HOOK = "blocks.0.mlp.hook_post"


def make(architecture: str = "standard", k: int | None = None, seed: int = 0) -> Dictionary:
    torch.manual_seed(seed)
    d = Dictionary(8, 24, architecture, k)
    with torch.no_grad():
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-zero biases and threshold too
    return d.eval()


def write(tmp_path: Path, dictionary: Dictionary | None = None, **kwargs) -> Path:
    kwargs = {"dictionary_id": "d1", "binding": BINDING, "hook_point": HOOK, **kwargs}
    return save_bundle(dictionary or make(), tmp_path / "bundle", **kwargs)


def edit_cfg(path: Path, edit) -> None:
    cfg = json.loads((path / CFG_FILE).read_text())
    edit(cfg)
    (path / CFG_FILE).write_text(json.dumps(cfg))


def edit_binding(path: Path, edit) -> None:
    edit_cfg(path, lambda cfg: edit(cfg["featurewatch"]))


def edit_tensors(path: Path, edit) -> None:
    tensors = load_file(str(path / WEIGHTS_FILE))
    edit(tensors)
    save_file(tensors, str(path / WEIGHTS_FILE))


def missing(edit, names: tuple[str, ...], why: str) -> list:
    """Cases for test_missing_entry: drop `name` with `edit`, expect `why` (name filled in)."""
    return [pytest.param(edit, name, why.format(name), id=f"{edit.__name__}-{name}")
            for name in names]


@pytest.mark.parametrize(("architecture", "k"), [("standard", None), ("topk", 3),
                                                 ("jumprelu", None)])
def test_round_trip(tmp_path: Path, architecture: str, k: int | None) -> None:
    original = make(architecture, k)
    metrics = {"l0": 3.5, "loss_recovered": 0.8, "feature_density": [0.1] * 24}
    path = write(tmp_path, original, scaling_factor=2.5, metrics=metrics,
                 extra={"recipe": "relu-l1-2024"})
    bundle = load_bundle(path, expect=BINDING)

    for name, tensor in original.state_tensors().items():
        assert torch.equal(bundle.dictionary.state_dict()[name], tensor), name
    x = torch.randn(5, 8)
    assert torch.equal(bundle.dictionary.encode(x), original.encode(x))
    assert (bundle.dictionary.architecture, bundle.dictionary.k) == (architecture, k)
    assert bundle.dictionary_id == "d1" and bundle.hook_point == HOOK
    assert bundle.binding == BINDING
    assert bundle.metrics == metrics
    assert bundle.features_path == path / FEATURES_FILE
    cfg = bundle.cfg  # SAELens fields, so bundles load there too
    assert (cfg["d_in"], cfg["d_sae"], cfg["hook_name"], cfg["hook_layer"]) == (8, 24, HOOK, 0)
    assert cfg["featurewatch"]["activation_scaling"] == {"factor": 2.5, "folded": True}
    assert cfg["featurewatch"]["recipe"] == "relu-l1-2024"
    shapes = {n: list(t.shape) for n, t in load_file(str(path / WEIGHTS_FILE)).items()}
    assert shapes["W_enc"] == [8, 24] and shapes["W_dec"] == [24, 8]


def test_dictionary_id_defaults_to_directory_name(tmp_path: Path) -> None:
    path = write(tmp_path)
    edit_binding(path, lambda fw: fw.pop("dictionary_id"))
    assert load_bundle(path).dictionary_id == "bundle"
    assert load_bundle(path).metrics == {}


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="nowhere: dictionary bundle directory does not"):
        load_bundle(tmp_path / "nowhere")


def test_missing_cfg(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / CFG_FILE).unlink()
    with pytest.raises(BundleError, match=r"cfg\.json: file is missing"):
        load_bundle(path)


@pytest.mark.parametrize(("text", "why"), [("{not json", "not valid JSON"),
                                           ("[1, 2]", "must hold a JSON object"),
                                           ("\xff\xfe", "not valid JSON")])
def test_invalid_cfg(tmp_path: Path, text: str, why: str) -> None:
    path = write(tmp_path)
    (path / CFG_FILE).write_bytes(text.encode("latin-1"))
    with pytest.raises(BundleError, match=rf"cfg\.json: {why}"):
        load_bundle(path)


@pytest.mark.parametrize(("edit", "name", "match"), [
    *missing(edit_cfg, ("architecture", "d_in", "d_sae", "hook_name"),
             r"cfg\.json: missing field '{}'"),
    *missing(edit_binding, ("model_id", "model_weights_sha256", "hook_point"),
             r"cfg\.json: missing field 'featurewatch\.{}'"),
    *missing(edit_tensors, ("W_enc", "b_enc", "W_dec", "b_dec"),
             r"safetensors: missing tensor '{}'"),
])
def test_missing_entry(tmp_path: Path, edit, name: str, match: str) -> None:
    path = write(tmp_path)
    edit(path, lambda entries: entries.pop(name))
    with pytest.raises(BundleError, match=match):
        load_bundle(path)


@pytest.mark.parametrize(("field", "value", "why"), [
    ("architecture", "gated", "'architecture'='gated' must be one of"),
    ("d_in", 0, "'d_in'=0 must be a positive integer"),
    ("d_sae", "24", "'d_sae'='24' must be a positive integer"),
    ("d_in", True, "'d_in'=True must be a positive integer"),
    ("featurewatch", "model-a", "'featurewatch' must be an object"),
])
def test_invalid_cfg_field(tmp_path: Path, field: str, value, why: str) -> None:
    path = write(tmp_path)
    edit_cfg(path, lambda cfg: cfg.__setitem__(field, value))
    with pytest.raises(BundleError, match=rf"cfg\.json: field {why}"):
        load_bundle(path)


def test_missing_weights(tmp_path: Path) -> None:
    path = write(tmp_path)
    (path / WEIGHTS_FILE).unlink()
    with pytest.raises(BundleError, match=r"sae_weights\.safetensors: file is missing"):
        load_bundle(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_weights(tmp_path: Path, damage: str) -> None:
    path = write(tmp_path)
    weights = path / WEIGHTS_FILE
    data = weights.read_bytes()
    weights.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00\xff" * 64,
                         "empty": b""}[damage])
    with pytest.raises(BundleError, match=r"sae_weights\.safetensors: corrupt safetensors"):
        load_bundle(path)


def test_jumprelu_needs_threshold(tmp_path: Path) -> None:
    path = write(tmp_path, make("jumprelu"))
    edit_tensors(path, lambda t: t.pop("threshold"))
    with pytest.raises(BundleError, match="missing tensor 'threshold'"):
        load_bundle(path)


def test_shape_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path)
    edit_cfg(path, lambda cfg: cfg.__setitem__("d_sae", 32))
    with pytest.raises(BundleError, match=r"tensor 'W_enc' has shape \[8, 24\], but cfg\.json "
                                          r"\(d_in=8, d_sae=32\) needs \[8, 32\]"):
        load_bundle(path)
    path = write(tmp_path)
    edit_tensors(path, lambda t: t.__setitem__("b_dec", torch.zeros(9)))
    with pytest.raises(BundleError, match=r"tensor 'b_dec' has shape \[9\]"):
        load_bundle(path)


@pytest.mark.parametrize("k", [0, 25, None, "3", -1, True])
def test_bad_topk_k(tmp_path: Path, k) -> None:
    path = write(tmp_path, make("topk", 3))
    edit_cfg(path, lambda cfg: cfg.__setitem__("activation_fn_kwargs", {"k": k}))
    with pytest.raises(BundleError, match=rf"cfg\.json: field 'activation_fn_kwargs\.k'="
                                          rf"{k!r} must be in 1\.\.d_sae"):
        load_bundle(path)


def test_invalid_metrics(tmp_path: Path) -> None:
    path = write(tmp_path, metrics={"l0": 1.0})
    (path / METRICS_FILE).write_text("{")
    with pytest.raises(BundleError, match=r"metrics\.json: not valid JSON"):
        load_bundle(path)


def test_model_binding_mismatch(tmp_path: Path) -> None:
    models = {}
    for seed in (0, 1):
        random_lm("gpt2", seed=seed).save_pretrained(tmp_path / f"m{seed}")
        models[seed] = model_binding(tmp_path / f"m{seed}")
    assert models[0].weights_sha256 != models[1].weights_sha256
    assert models[0] == model_binding(tmp_path / "m0")  # deterministic
    path = write(tmp_path, binding=models[0])
    assert load_bundle(path, expect=models[0]).binding == models[0]
    with pytest.raises(BundleError, match=r"cfg\.json: field 'featurewatch\."
                                          r"model_weights_sha256'.*trained on another model"):
        load_bundle(path, expect=models[1])


def test_model_binding_needs_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"config\.json: cannot read model config"):
        model_binding(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"featurewatch_model_id": "m"}))
    with pytest.raises(ModelError, match=r"has no \*\.safetensors or \*\.bin weights"):
        model_binding(tmp_path)
