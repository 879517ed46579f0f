"""Analysis of dictionary bundles against one loaded model.

`BundleWork` holds the model and its analysis tokens, harvests each hook point once and
analyses the neurons once, however many dictionaries share them; `analyze` writes a bundle's
`features.parquet` and `neurons.parquet`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from featurewatch.errors import ConfigError
from featurewatch.training import analyze as an
from featurewatch.training import feature_stats as fs
from featurewatch.training.bundle import (
    FEATURES_FILE,
    ModelBinding,
    load_bundle,
    model_binding,
)
from featurewatch.training.feature_table import write_table


def load_tokens_file(tokens: np.ndarray | str | Path) -> np.ndarray:
    """Token contexts from an array or a .npy file; ConfigError naming the file."""
    if not isinstance(tokens, (str, Path)):
        return np.asarray(tokens)
    path = Path(tokens)
    if not path.is_file():
        raise ConfigError(f"{path}: token file does not exist; run `featurewatch train "
                          "tokenizer` first")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path}: not a .npy token array ({exc})") from None


@dataclass
class BundleResult:
    """One analysed dictionary."""

    path: Path
    dictionary_id: str
    d_sae: int
    features: an.Analysed
    neurons: an.Analysed
    seconds: float

    def summary(self) -> dict[str, Any]:
        f, n = list(self.features.scores.values()), list(self.neurons.scores.values())
        return {"dictionary_id": self.dictionary_id, "d_sae": self.d_sae,
                "live_features": int((self.features.table["density"] > 0).sum()),
                "n_features_scored": len(f), "n_neurons_scored": len(n),
                "median_feature_score": finite_median(f),
                "median_neuron_score": finite_median(n),
                "seconds": round(self.seconds, 2)}


@dataclass
class BundleWork:
    """A loaded model plus its analysis tokens; caches activations and neuron analyses."""

    model: Any
    tokenizer: Any
    model_dir: Path
    tokens: np.ndarray
    cfg: an.AnalyzeConfig
    progress: bool = True
    _acts: dict[str, torch.Tensor] = field(default_factory=dict)
    _neurons: dict[str, an.Analysed] = field(default_factory=dict)
    _norm_scale: float | None = None

    @classmethod
    def open(cls, model_dir: str | Path, tokens: np.ndarray | str | Path,
             cfg: an.AnalyzeConfig, *, progress: bool = True, select: bool = True,
             loaded: tuple[Any, Any] | None = None) -> BundleWork:
        """Load the model (unless `loaded` already holds it and its tokenizer); with `select`,
        draw cfg.n_tokens worth of contexts from `tokens`."""
        from featurewatch.training.lm import load_model

        model, tokenizer = loaded or load_model(model_dir)
        tokens = load_tokens_file(tokens)
        chosen = an.analysis_tokens(tokens, cfg.n_tokens, cfg.seed) if select else \
            np.ascontiguousarray(tokens, dtype=np.int64)
        vocab = model.get_input_embeddings().weight.shape[0]
        if int(chosen.max()) >= vocab or int(chosen.min()) < 0:
            raise ConfigError(f"token ids reach {int(chosen.max())} but the model {model_dir} "
                              f"has {vocab} embeddings: tokens and model do not match")
        return cls(model, tokenizer, Path(model_dir), chosen, cfg, progress)

    @cached_property
    def vocab(self) -> list[str]:
        return an.vocab_strings(self.tokenizer, self.model.get_output_embeddings().weight.shape[0])

    @cached_property
    def scorers(self) -> tuple[an.Explainer, an.Simulator]:
        """One explainer / simulator pair for every analysis, so an LLM endpoint's client
        (and its rate limit) is shared by features and neurons."""
        return an.make_scorers(self.cfg)

    @cached_property
    def binding(self) -> ModelBinding:
        """The model's binding, hashed once however many bundles are checked against it."""
        return model_binding(self.model_dir)

    def activations(self, hook_point: str) -> torch.Tensor:
        if hook_point not in self._acts:
            self._acts[hook_point] = an.harvest_activations(
                self.model, hook_point, self.tokens, self.cfg.batch_size, progress=self.progress)
        return self._acts[hook_point]

    def norm_scale(self) -> float:
        from featurewatch.training.logit_effects import final_norm_scale

        if self._norm_scale is None:
            sample = torch.from_numpy(self.tokens[: self.cfg.batch_size])
            self._norm_scale = final_norm_scale(self.model, sample)
        return self._norm_scale

    def codes(self, hook_point: str, encode: fs.Encoder | None, desc: str) -> fs.SparseCodes:
        return fs.collect_codes(self.activations(hook_point), encode, chunk=self.cfg.chunk,
                                progress=self.progress, desc=desc)

    def dictionary_codes(self, bundle) -> fs.SparseCodes:
        """The codes of a loaded bundle's dictionary on the analysis tokens."""
        encode = fs.dictionary_encoder(bundle.dictionary, self.cfg.bf16)
        return self.codes(bundle.hook_point, encode, f"encode {bundle.dictionary_id}")

    def _analyze(self, codes: fs.SparseCodes, directions: torch.Tensor, hook_point: str,
                 n_scored: int) -> an.Analysed:
        return an.analyze_codes(codes, directions, model=self.model, hook_point=hook_point,
                                tokens=self.tokens, vocab=self.vocab, cfg=self.cfg,
                                n_scored=n_scored, scorers=self.scorers,
                                norm_scale=self.norm_scale())

    def neuron_codes(self, hook_point: str, desc: str = "neurons") -> fs.SparseCodes:
        """The neurons' codes, reusing those of an earlier neuron analysis."""
        done = self._neurons.get(hook_point)
        return done.codes if done is not None else self.codes(hook_point, None, desc)

    def neurons(self, hook_point: str) -> an.Analysed:
        if hook_point not in self._neurons:
            codes = self.neuron_codes(hook_point)
            self._neurons[hook_point] = self._analyze(
                codes, torch.eye(codes.d), hook_point, self.cfg.n_scored_neurons)
        return self._neurons[hook_point]

    def analyze(self, bundle_dir: str | Path) -> BundleResult:
        """Analyse one bundle and write its features.parquet and neurons.parquet."""
        start = time.perf_counter()
        bundle = load_bundle(bundle_dir, expect=self.binding)
        d = bundle.dictionary
        codes = self.dictionary_codes(bundle)
        features = self._analyze(codes, d.W_dec.detach(), bundle.hook_point,
                                 self.cfg.n_scored_features)
        neurons = self.neurons(bundle.hook_point)
        write_table(features.table, bundle.path / FEATURES_FILE)
        write_table(neurons.table, bundle.path / an.NEURONS_FILE)
        return BundleResult(bundle.path, bundle.dictionary_id, d.d_sae, features, neurons,
                            time.perf_counter() - start)


def finite_median(values: list[float]) -> float | None:
    """The median of the non-NaN values; None when there are none."""
    clean = [v for v in values if not math.isnan(v)]
    return float(np.median(clean)) if clean else None
