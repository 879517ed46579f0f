"""Steps 1-4 of the training job as pipeline `Step`s: corpus, tokenizer, lm, activations.

Each builder returns a Step naming its inputs, config and outputs so the runner can skip it
when nothing changed; the work itself is done by the step's module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from featurewatch.training import corpus_sources
from featurewatch.training.config import TrainConfig
from featurewatch.training.corpus import MANIFEST_FILE
from featurewatch.training.pipeline import Artifacts, Step
from featurewatch.training.tokenizer import TOKENIZER_FILE

CORPUS_HINT = "run `featurewatch train corpus` first"
TOKENIZER_HINT = "run `featurewatch train tokenizer` first"
LM_HINT = "run `featurewatch train corpus` and `featurewatch train lm` first (or --model DIR)"


def _listing_digest(paths: list[Path]) -> str:
    """A cheap fingerprint of source files: names, sizes and modification times."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(corpus_sources._walk(root))
        for path in files:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def corpus_step(cfg: TrainConfig, art: Artifacts, progress: bool = True) -> Step:
    from featurewatch.training.corpus import build_corpus

    roots = [Path(s) for s in cfg.corpus.sources] or [corpus_sources.stdlib_dir()]

    def run() -> dict[str, Any]:
        manifest = build_corpus(cfg.corpus, art.corpus, progress=progress)
        return {"bytes": manifest["bytes"], "sources": len(manifest["sources"]),
                "undecodable": manifest["skipped_undecodable"],
                "train_documents": manifest["splits"]["train"]["documents"],
                "val_documents": manifest["splits"]["val"]["documents"]}

    existing = [r for r in roots if r.exists()]
    return Step("corpus", run, config=cfg.corpus, outputs=(art.corpus / MANIFEST_FILE,),
                extra={"sources": _listing_digest(existing), "missing": len(roots) - len(existing)})


def tokenizer_step(cfg: TrainConfig, art: Artifacts, progress: bool = True) -> Step:
    from featurewatch.training.tokenizer import tokenize_corpus, train_tokenizer

    def run() -> dict[str, Any]:
        path = train_tokenizer(cfg.tokenizer, art.corpus, art.tokenizer, progress=progress)
        return tokenize_corpus(cfg.tokenizer, art.corpus, path, art.tokens, progress=progress)

    return Step("tokenizer", run, inputs=(art.corpus / MANIFEST_FILE,), config=cfg.tokenizer,
                outputs=(art.tokenizer / TOKENIZER_FILE, art.tokens / "train.npy",
                         art.tokens / "val.npy"), missing_hint=CORPUS_HINT)


def lm_step(cfg: TrainConfig, art: Artifacts, progress: bool = True) -> Step:
    from featurewatch.training.lm import train_lm
    from featurewatch.training.tokenizer import load_tokens

    def run() -> dict[str, Any]:
        stats = train_lm(cfg.lm, load_tokens(art.tokens, "train"), load_tokens(art.tokens, "val"),
                         art.tokenizer, art.model, progress=progress)
        return {k: stats[k] for k in ("val_loss", "train_loss", "tokens_per_second", "seconds")}

    return Step("lm", run, config=cfg.lm,
                inputs=(art.tokens / "train.npy", art.tokens / "val.npy",
                        art.tokenizer / TOKENIZER_FILE),
                outputs=(art.model / "config.json", art.model / "model.safetensors"),
                missing_hint=TOKENIZER_HINT)


def model_dir(cfg: TrainConfig, art: Artifacts) -> Path:
    """The model the dictionaries are for: activations.model_dir, else the job's own model."""
    return Path(cfg.activations.model_dir) if cfg.activations.model_dir else art.model


def model_files(directory: Path) -> tuple[Path, ...]:
    """The files that define a model directory's behaviour (config, weights, tokenizer)."""
    weights = sorted(directory.glob("*.safetensors")) or sorted(directory.glob("*.bin"))
    extra = [directory / n for n in (TOKENIZER_FILE,) if (directory / n).is_file()]
    return (directory / "config.json", *weights, *extra)


def _same_vocabulary(tokenizer, tokenizer_file: Path) -> bool:
    from featurewatch.training.tokenizer import load_tokenizer

    if not tokenizer_file.is_file():
        return False
    return load_tokenizer(tokenizer_file).get_vocab() == tokenizer.backend_tokenizer.get_vocab()


def tokens_for_model(art: Artifacts, directory: Path, tokenizer, split: str,
                     context_size: int, progress: bool = True) -> np.ndarray:
    """Token contexts for the model in `directory`: the job's own token files if the model
    uses the job's tokenizer, else the corpus encoded with the model's tokenizer (cached)."""
    from featurewatch.training.tokenizer import encode_split, load_tokens

    if _same_vocabulary(tokenizer, art.tokenizer / TOKENIZER_FILE):
        return load_tokens(art.tokens, split)
    key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    cache = art.tokens / f"model-{key}" / f"{split}-{context_size}.npy"
    if cache.is_file() and os.path.getmtime(cache) >= os.path.getmtime(art.corpus / MANIFEST_FILE):
        return np.load(cache, mmap_mode="r")
    tokens = encode_split(tokenizer.backend_tokenizer, art.corpus, split, context_size,
                          eos_id=tokenizer.eos_token_id, progress=progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, tokens)
    return tokens


def context_size_for(model, cfg: TrainConfig) -> int:
    """The configured context size, capped by the model's maximum positions."""
    limit = getattr(model.config, "max_position_embeddings", None) or cfg.tokenizer.context_size
    return min(cfg.tokenizer.context_size, int(limit))


def activations_step(cfg: TrainConfig, art: Artifacts, progress: bool = True) -> Step:
    from featurewatch.training.activations import POOL_FILE, harvest
    from featurewatch.training.bundle import model_binding
    from featurewatch.training.lm import load_model, torch_threads

    directory = model_dir(cfg, art)
    out = art.activations(cfg.activations.hook_point)

    def run() -> dict[str, Any]:
        model, tokenizer = load_model(directory)
        tokens = tokens_for_model(art, directory, tokenizer, "train",
                                  context_size_for(model, cfg), progress)
        binding = model_binding(directory)
        info = {"model_id": binding.model_id, "weights_sha256": binding.weights_sha256,
                "model_dir": str(directory)}
        with torch_threads(0):
            meta = harvest(cfg.activations, model, tokens, out, model_info=info,
                           progress=progress)
        return {k: meta[k] for k in ("n", "d_in", "hook_point", "seconds")}

    inputs = model_files(directory) if directory.is_dir() else (directory / "config.json",)
    return Step(f"activations:{cfg.activations.hook_point}", run, config=cfg.activations,
                inputs=(*inputs, art.corpus / MANIFEST_FILE,
                        *[p for p in (art.tokens / "train.npy",) if p.is_file()]),
                outputs=(out / POOL_FILE,), missing_hint=LM_HINT)
