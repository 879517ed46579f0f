"""Model B for universality: the run's language model retrained with seed + 1, its activations
harvested with the same settings and a dictionary trained with the primary dictionary's
SaeConfig. Reused while its inputs (recorded in `universality/inputs.json`) are unchanged;
the intermediate activation pool is deleted once B's dictionary is trained.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import POOL_FILE
from featurewatch.training.bundle import (
    CFG_FILE,
    Bundle,
    load_bundle,
    model_binding,
    save_bundle,
)
from featurewatch.training.bundle_analysis import BundleWork
from featurewatch.training.feature_stats import SparseCodes

MODEL_B_DIR = "model_b"
WORK_DIR = "universality"
INPUTS_FILE = "inputs.json"


def _lm_config(inputs) -> Any:
    from featurewatch.config import load_config
    from featurewatch.training.lm import STATS_FILE, LMConfig

    if inputs.train_cfg is not None:
        return inputs.train_cfg.lm
    stats_path = inputs.model_dir / STATS_FILE
    try:
        return load_config(LMConfig, overrides=json.loads(stats_path.read_text())["config"])
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{stats_path}: cannot recover the model's LMConfig for the "
                          f"universality model ({exc})") from None


def _activations_config(inputs, hook_point: str) -> Any:
    from featurewatch.config import load_config
    from featurewatch.training.activations import ActivationsConfig

    if inputs.train_cfg is not None:
        base = inputs.train_cfg.activations
    else:  # the settings model A's pool was harvested with
        pool = inputs.root / "activations" / hook_point / POOL_FILE
        recorded = json.loads(pool.read_text()).get("config", {}) if pool.is_file() else {}
        base = load_config(ActivationsConfig, overrides=recorded)
    return dataclasses.replace(base, model_dir="", hook_point=hook_point)


def _sae_config(bundle: Bundle) -> Any:
    from featurewatch.config import load_config
    from featurewatch.training.sae_config import SaeConfig

    recorded = bundle.cfg["featurewatch"].get("sae_config")
    if not isinstance(recorded, dict):
        raise ConfigError(f"{bundle.path / CFG_FILE}: no featurewatch.sae_config recorded, "
                          "so a matching dictionary cannot be trained on model B")
    return load_config(SaeConfig, overrides=recorded)


def _model_b_id(model_id: str) -> str:
    return model_id[:-2] + "-b" if model_id.endswith("-a") else f"{model_id}-b"


def prepare_model_b(inputs, primary: Bundle, *, progress: bool = True) -> tuple[Path, Path]:
    """(model B directory, B's dictionary bundle), trained unless already current."""
    from featurewatch.training.activations import harvest, open_pool
    from featurewatch.training.lm import load_model, train_lm
    from featurewatch.training.sae_train import train_dictionary
    from featurewatch.training.tokenizer import load_tokens

    lm_a = _lm_config(inputs)
    lm_b = dataclasses.replace(lm_a, model_id=_model_b_id(lm_a.model_id), seed=lm_a.seed + 1)
    acts_cfg = _activations_config(inputs, primary.hook_point)
    sae_cfg = _sae_config(primary)
    root, work = inputs.root, inputs.root / WORK_DIR
    model_dir, bundle_dir = root / MODEL_B_DIR, work / "dictionary"
    fingerprint = json.loads(json.dumps({
        "lm": dataclasses.asdict(lm_b), "activations": dataclasses.asdict(acts_cfg),
        "sae": dataclasses.asdict(sae_cfg), "tokens": _stat(root / "tokens" / "train.npy")}))
    state = work / INPUTS_FILE
    if state.is_file() and json.loads(state.read_text()) == fingerprint \
            and (bundle_dir / CFG_FILE).is_file() and (model_dir / "config.json").is_file():
        return model_dir, bundle_dir
    train, val = load_tokens(root / "tokens", "train"), load_tokens(root / "tokens", "val")
    train_lm(lm_b, train, val, root / "tokenizer", model_dir, seed=lm_b.seed, progress=progress)
    model, _ = load_model(model_dir)
    binding = model_binding(model_dir)
    pool_dir = work / "activations"
    harvest(acts_cfg, model, train, pool_dir, progress=progress,
            model_info={"model_id": binding.model_id, "weights_sha256": binding.weights_sha256,
                        "model_dir": str(model_dir)})
    trained = train_dictionary(sae_cfg, open_pool(pool_dir), progress=progress)
    save_bundle(trained.dictionary, bundle_dir, dictionary_id=f"{primary.dictionary_id}-b",
                binding=binding, hook_point=primary.hook_point,
                scaling_factor=trained.scaling_factor,
                extra={"sae_config": dataclasses.asdict(sae_cfg)})
    shutil.rmtree(pool_dir, ignore_errors=True)  # gigabytes, needed only to train B
    state.write_text(json.dumps(fingerprint, indent=1))
    return model_dir, bundle_dir


def _stat(path: Path) -> list[int]:
    """Size and mtime of a file (enough to notice a rewritten token file)."""
    info = path.stat() if path.is_file() else None
    return [info.st_size, int(info.st_mtime)] if info else [0, 0]


def universality_section(inputs, work: BundleWork, primary: Bundle, features_a: SparseCodes,
                         *, progress: bool = True) -> dict[str, Any]:
    """analysis.json's universality section, or why it was skipped."""
    from featurewatch.training.universality import compare

    cfg = work.cfg
    if not cfg.universality:
        return {"skipped": "analyze.universality = false"}
    if not inputs.own_model:
        return {"skipped": f"the model {inputs.model_dir} was not trained by this job, so no "
                           "second seed of it can be trained"}
    model_dir, bundle_dir = prepare_model_b(inputs, primary, progress=progress)
    work_b = BundleWork.open(model_dir, work.tokens, cfg, progress=progress, select=False)
    bundle_b = load_bundle(bundle_dir, expect=work_b.binding)
    hook = primary.hook_point
    neurons_a = work.neuron_codes(hook, "neurons A")
    result = compare(features_a, work_b.dictionary_codes(bundle_b),
                     neurons_a, work_b.codes(hook, None, "neurons B"))
    section = result.to_json(features_a.counts(), neurons_a.counts(), cfg.min_fires)
    section.update(model_b=str(model_dir), dictionary_b=str(bundle_dir),
                   dictionary=primary.dictionary_id)
    return section
