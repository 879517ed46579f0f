"""Dictionary bundles: write and read `cfg.json` + `sae_weights.safetensors` (+ metrics).

The layout and tensor names follow SAELens so bundles move both ways. featurewatch adds a
`featurewatch` table in cfg.json binding the dictionary to its model: model id, sha256 of the
model weights, hook point and the activation scaling that was folded into the weights.
Every loading failure is a BundleError naming the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from featurewatch.errors import BundleError, ModelError
from featurewatch.training.dictionary import ARCHITECTURES, Dictionary

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
METRICS_FILE = "metrics.json"
FEATURES_FILE = "features.parquet"
BROWSER_DIR = "browser"
REQUIRED_CFG = ("architecture", "d_in", "d_sae", "hook_name")
REQUIRED_BINDING = ("dictionary_id", "model_id", "model_weights_sha256", "hook_point")


@dataclass(frozen=True)
class ModelBinding:
    """What a dictionary is bound to: the model's id and weights hash."""

    model_id: str
    weights_sha256: str


@dataclass
class Bundle:
    """A loaded dictionary bundle."""

    path: Path
    dictionary: Dictionary
    cfg: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def dictionary_id(self) -> str:
        return self.cfg["featurewatch"]["dictionary_id"]

    @property
    def hook_point(self) -> str:
        return self.cfg["featurewatch"]["hook_point"]

    @property
    def binding(self) -> ModelBinding:
        fw = self.cfg["featurewatch"]
        return ModelBinding(fw["model_id"], fw["model_weights_sha256"])

    @property
    def features_path(self) -> Path:
        return self.path / FEATURES_FILE


def model_weights_sha256(model_dir: str | Path) -> str:
    """sha256 over the model's weight files (sorted by name), the identity a bundle binds to."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise ModelError(f"model directory {model_dir} has no *.safetensors or *.bin weights")
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def model_binding(model_dir: str | Path) -> ModelBinding:
    """The binding of a local HF model directory (id from its config, hash of its weights)."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{model_dir / 'config.json'}: cannot read model config ({exc})") from None
    model_id = config.get("featurewatch_model_id") or config.get("_name_or_path") or model_dir.name
    return ModelBinding(str(model_id), model_weights_sha256(model_dir))


def save_bundle(
    dictionary: Dictionary,
    out_dir: str | Path,
    *,
    dictionary_id: str,
    binding: ModelBinding,
    hook_point: str,
    scaling_factor: float = 1.0,
    extra: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle; `scaling_factor` must already be folded into the dictionary's weights."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layer = int(hook_point.split(".")[1])
    cfg: dict[str, Any] = {
        "architecture": dictionary.architecture,
        "d_in": dictionary.d_in,
        "d_sae": dictionary.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "model_name": binding.model_id,
        "hook_name": hook_point,
        "hook_layer": layer,
        "hook_head_index": None,
        "activation_fn_str": "topk" if dictionary.architecture == "topk" else "relu",
        "activation_fn_kwargs": {"k": dictionary.k} if dictionary.architecture == "topk" else {},
        "apply_b_dec_to_input": True,
        "finetuning_scaling_factor": False,
        "normalize_activations": "none",
        "featurewatch": {
            "dictionary_id": dictionary_id,
            "model_id": binding.model_id,
            "model_weights_sha256": binding.weights_sha256,
            "hook_point": hook_point,
            "activation_scaling": {"factor": scaling_factor, "folded": True},
            **(extra or {}),
        },
    }
    tensors = {k: v.float() for k, v in dictionary.state_tensors().items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    (out / CFG_FILE).write_text(json.dumps(cfg, indent=2))
    if metrics is not None:
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
    return out


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: file is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: must hold a JSON object")
    return data


def _is_int(value: Any) -> bool:
    """A JSON integer; bool is an int subclass, and `true` must not pass as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_cfg(cfg: dict[str, Any], path: Path) -> None:
    for key in REQUIRED_CFG:
        if key not in cfg:
            raise BundleError(f"{path}: missing field {key!r}")
    if cfg["architecture"] not in ARCHITECTURES:
        raise BundleError(f"{path}: field 'architecture'={cfg['architecture']!r} "
                          f"must be one of {list(ARCHITECTURES)}")
    for key in ("d_in", "d_sae"):
        if not _is_int(cfg[key]) or cfg[key] <= 0:
            raise BundleError(f"{path}: field {key!r}={cfg[key]!r} must be a positive integer")
    fw = cfg.setdefault("featurewatch", {})
    if not isinstance(fw, dict):  # else `key in fw` would test substrings of a string
        raise BundleError(f"{path}: field 'featurewatch' must be an object, got {fw!r}")
    for key in REQUIRED_BINDING:
        if key not in fw and key != "dictionary_id":
            raise BundleError(f"{path}: missing field 'featurewatch.{key}'")


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise BundleError(f"{path}: file is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{path}: corrupt safetensors file ({exc})") from None


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    shapes = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    if cfg["architecture"] == "jumprelu":
        shapes["threshold"] = (d_sae,)
    return shapes


def load_bundle(path: str | Path, expect: ModelBinding | None = None) -> Bundle:
    """Load and validate a bundle; with `expect`, refuse one bound to another model."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: dictionary bundle directory does not exist")
    cfg_path = path / CFG_FILE
    cfg = _read_json(cfg_path)
    _check_cfg(cfg, cfg_path)
    cfg["featurewatch"].setdefault("dictionary_id", path.name)
    tensors = _load_tensors(path / WEIGHTS_FILE)
    for name, shape in _expected_shapes(cfg).items():
        if name not in tensors:
            raise BundleError(f"{path / WEIGHTS_FILE}: missing tensor {name!r}")
        if tuple(tensors[name].shape) != shape:
            raise BundleError(
                f"{path / WEIGHTS_FILE}: tensor {name!r} has shape {list(tensors[name].shape)}, "
                f"but {CFG_FILE} (d_in={cfg['d_in']}, d_sae={cfg['d_sae']}) needs {list(shape)}"
            )
    k = (cfg.get("activation_fn_kwargs") or {}).get("k")
    if cfg["architecture"] == "topk" and not (_is_int(k) and 0 < k <= cfg["d_sae"]):
        raise BundleError(f"{cfg_path}: field 'activation_fn_kwargs.k'={k!r} must be in "
                          f"1..d_sae for a topk dictionary")
    dictionary = Dictionary(cfg["d_in"], cfg["d_sae"], cfg["architecture"], k)
    dictionary.load_state_dict({n: tensors[n].float() for n in _expected_shapes(cfg)})
    dictionary.eval().requires_grad_(False)
    bundle = Bundle(path, dictionary, cfg)
    if (path / METRICS_FILE).is_file():
        bundle.metrics = _read_json(path / METRICS_FILE)
    if expect is not None:
        check_binding(bundle, expect)
    return bundle


def check_binding(bundle: Bundle, expect: ModelBinding) -> None:
    """Raise BundleError if `bundle` was trained on a different model than `expect`."""
    got = bundle.binding
    if got.weights_sha256 != expect.weights_sha256:
        raise BundleError(
            f"{bundle.path / CFG_FILE}: field 'featurewatch.model_weights_sha256' is "
            f"{got.weights_sha256[:12]}… (model {got.model_id!r}) but the served model "
            f"{expect.model_id!r} has weights {expect.weights_sha256[:12]}…: "
            "this dictionary was trained on another model"
        )
