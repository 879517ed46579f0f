"""Steps 5-8 of the training job: sae → evaluate → bundle (per dictionary) → analyze.

The trainers, the evaluation and the analysis live in their own modules (sae_train,
evaluate, analyze) and are imported inside the steps. Between steps a dictionary lives in
`dictionaries/<id>/checkpoints/trained.{safetensors,json}` (weights in model units + scaling,
history and binding); the bundle step turns it and the evaluation's metrics.json into the
bundle that services load.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import POOL_FILE
from featurewatch.training.config import TrainConfig
from featurewatch.training.pipeline import Artifacts, Step
from featurewatch.training.steps import model_dir, model_files

TRAINED_WEIGHTS = "trained.safetensors"
TRAINED_INFO = "trained.json"
HISTORY_FILE = "history.json"
REPORT_FILE = "analysis.json"
SAE_HINT = "run `featurewatch train sae` first"
EVAL_HINT = "run `featurewatch train evaluate` first"


def pool_path(cfg: TrainConfig, art: Artifacts, override: str | Path | None = None) -> Path:
    """The activation pool to train on: an explicit path, else the harvested pool."""
    return Path(override) if override else art.activations(cfg.activations.hook_point)


def _pool_input(path: Path) -> Path:
    return path / POOL_FILE if path.is_dir() or not path.suffix else path


def _binding_for(pool_meta: dict[str, Any], cfg: TrainConfig, art: Artifacts) -> dict[str, str]:
    """The model a pool came from: its pool.json, else the configured model directory."""
    from featurewatch.training.bundle import model_binding

    model = pool_meta.get("model") or {}
    if model.get("weights_sha256"):
        return {"model_id": model["model_id"], "weights_sha256": model["weights_sha256"]}
    directory = model_dir(cfg, art)
    if not (directory / "config.json").is_file():
        raise ConfigError("the activation file does not say which model it came from and "
                          f"{directory} holds no model: pass --model DIR to bind the dictionary")
    binding = model_binding(directory)
    return {"model_id": binding.model_id, "weights_sha256": binding.weights_sha256}


def sae_step(cfg: TrainConfig, art: Artifacts, sae, *, pool: str | Path | None = None,
             progress: bool = True) -> Step:
    """Train one dictionary (SaeConfig `sae`) on the pool; keep it under checkpoints/."""
    from safetensors.torch import save_file

    source = pool_path(cfg, art, pool)
    ckpt = art.dictionary(sae.name) / "checkpoints"

    def run() -> dict[str, Any]:
        from featurewatch.training.activations import open_pool
        from featurewatch.training.sae_train import train_dictionary

        activations = open_pool(source)
        binding = _binding_for(activations.meta, cfg, art)
        trained = train_dictionary(sae, activations, checkpoint_dir=ckpt, progress=progress)
        d = trained.dictionary
        ckpt.mkdir(parents=True, exist_ok=True)
        save_file({k: v.float() for k, v in d.state_tensors().items()},
                  str(ckpt / TRAINED_WEIGHTS))
        info = {"architecture": d.architecture, "d_in": d.d_in, "d_sae": d.d_sae, "k": d.k,
                "scaling_factor": float(trained.scaling_factor), "binding": binding,
                "hook_point": activations.meta.get("hook_point", cfg.activations.hook_point),
                "sae_config": dataclasses.asdict(sae), "pool": str(source),
                "pool_rows": len(activations), "history": trained.history}
        (ckpt / TRAINED_INFO).write_text(json.dumps(info, indent=1))
        last = trained.history[-1] if trained.history else {}
        return {"d_sae": d.d_sae, **{k: v for k, v in last.items() if isinstance(v, float)}}

    return Step(f"sae:{sae.name}", run, inputs=(_pool_input(source),), config=sae,
                outputs=(ckpt / TRAINED_WEIGHTS, ckpt / TRAINED_INFO),
                missing_hint="run `featurewatch train activations` first or pass --activations")


def load_trained(directory: Path):
    """(Dictionary, info) saved by the sae step in `directory`/checkpoints."""
    from safetensors.torch import load_file

    from featurewatch.training.dictionary import Dictionary

    ckpt = directory / "checkpoints"
    info = json.loads((ckpt / TRAINED_INFO).read_text())
    dictionary = Dictionary(info["d_in"], info["d_sae"], info["architecture"], info["k"])
    dictionary.load_state_dict(load_file(str(ckpt / TRAINED_WEIGHTS)))
    return dictionary.eval().requires_grad_(False), info


def _trained_inputs(directory: Path) -> tuple[Path, Path]:
    ckpt = directory / "checkpoints"
    return ckpt / TRAINED_WEIGHTS, ckpt / TRAINED_INFO


def evaluate_step(cfg: TrainConfig, art: Artifacts, name: str, *, progress: bool = True
                  ) -> Step:
    """Evaluate a trained dictionary on held-out tokens; writes the bundle's metrics.json."""
    from featurewatch.training.bundle import METRICS_FILE

    directory, model = art.dictionary(name), model_dir(cfg, art)

    def run() -> dict[str, Any]:
        from featurewatch.training.evaluate import evaluate_dictionary
        from featurewatch.training.lm import load_model
        from featurewatch.training.steps import context_size_for, tokens_for_model

        dictionary, info = load_trained(directory)
        lm, tokenizer = load_model(model)
        tokens = tokens_for_model(art, model, tokenizer, "val", context_size_for(lm, cfg),
                                  progress)
        metrics = evaluate_dictionary(lm, dictionary, info["hook_point"], tokens, cfg.evaluate,
                                      progress=progress)
        (directory / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    return Step(f"evaluate:{name}", run, config=cfg.evaluate,
                inputs=(*_trained_inputs(directory), *model_files(model)),
                outputs=(directory / METRICS_FILE,), missing_hint=SAE_HINT)


def bundle_step(cfg: TrainConfig, art: Artifacts, name: str) -> Step:
    """Write the bundle (cfg.json + weights + metrics + history) and check it loads."""
    from featurewatch.training.bundle import (
        CFG_FILE,
        METRICS_FILE,
        WEIGHTS_FILE,
        ModelBinding,
        load_bundle,
        save_bundle,
    )

    directory = art.dictionary(name)

    def run() -> dict[str, Any]:
        dictionary, info = load_trained(directory)
        metrics = json.loads((directory / METRICS_FILE).read_text())
        binding = ModelBinding(**info["binding"])
        sae = info["sae_config"]
        save_bundle(dictionary, directory, dictionary_id=name, binding=binding,
                    hook_point=info["hook_point"], scaling_factor=info["scaling_factor"],
                    extra={"recipe": sae.get("recipe"), "d_sae": info["d_sae"],
                           "sae_config": sae, "pool": info["pool"]},
                    metrics=metrics)
        (directory / HISTORY_FILE).write_text(json.dumps(info["history"], indent=1))
        load_bundle(directory, expect=binding)  # what services will do: fail here, not there
        return {"path": str(directory)}

    return Step(f"bundle:{name}", run, config={"dictionary_id": name},
                inputs=(*_trained_inputs(directory), directory / METRICS_FILE),
                outputs=(directory / CFG_FILE, directory / WEIGHTS_FILE,
                         directory / HISTORY_FILE), missing_hint=EVAL_HINT)


def analyze_steps(cfg: TrainConfig, art: Artifacts, names: list[str], *,
                  progress: bool = True) -> list[Step]:
    """Per-dictionary analysis (features.parquet, neurons.parquet), then the whole run's
    (report/analysis.json) and the report page (report/index.html)."""
    from featurewatch.training.bundle import CFG_FILE, FEATURES_FILE

    model = model_dir(cfg, art)
    steps = []
    for name in names:
        directory = art.dictionary(name)

        def run(directory: Path = directory) -> dict[str, Any]:
            from featurewatch.training.analyze import analyze_bundle
            from featurewatch.training.lm import load_model
            from featurewatch.training.steps import context_size_for, tokens_for_model

            lm, tokenizer = load_model(model)
            tokens = tokens_for_model(art, model, tokenizer, "val", context_size_for(lm, cfg),
                                      progress)
            return _scalars(analyze_bundle(model, directory, tokens, cfg.analyze,
                                           progress=progress))

        steps.append(Step(f"analyze:{name}", run, config=cfg.analyze,
                          inputs=(directory / CFG_FILE, *model_files(model)),
                          outputs=(directory / FEATURES_FILE,),
                          missing_hint="run `featurewatch train bundle` first"))

    def run_report() -> dict[str, Any]:
        from featurewatch.training.analyze import analyze_run
        from featurewatch.training.report import write_report

        summary = _scalars(analyze_run(art.root, cfg.analyze, train_cfg=cfg, progress=progress))
        return {**summary, "report": str(write_report(art.root))}

    steps.append(Step("analyze:run", run_report, config={"analyze": cfg.analyze, "train": cfg},
                      inputs=tuple(art.dictionary(n) / FEATURES_FILE for n in names),
                      outputs=(art.report / REPORT_FILE, art.report / "index.html")))
    return steps


def _scalars(result: Any) -> dict[str, Any]:
    """The top-level numbers and strings of a result, for state.json and the console."""
    if not isinstance(result, dict):
        return {}
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
