"""Loading what the service serves: the model, its tokenizer and the dictionaries bound to it.

Every dictionary is checked against the model at start-up (weights hash, hook point, width), so
a mismatched bundle stops the server with the BundleError message instead of tracing garbage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from featurewatch.errors import BundleError, ConfigError
from featurewatch.services.inference.config import InferenceConfig
from featurewatch.services.inference.domain import DictionarySpec, Limits, ServingSpec
from featurewatch.services.inference.features import FeatureTable
from featurewatch.training import hooks
from featurewatch.training.bundle import Bundle, ModelBinding, load_bundle, model_binding
from featurewatch.training.dictionary import Dictionary
from featurewatch.training.lm import load_model

FALLBACK_CONTEXT = 2048


@dataclass
class LoadedDictionary:
    """A bundle checked against the served model, with its feature table."""

    bundle: Bundle
    features: FeatureTable

    @property
    def dictionary_id(self) -> str:
        return self.bundle.dictionary_id

    @property
    def hook_point(self) -> str:
        return self.bundle.hook_point

    @property
    def dictionary(self) -> Dictionary:
        return self.bundle.dictionary

    @property
    def d_sae(self) -> int:
        return self.bundle.dictionary.d_sae


@dataclass
class Runtime:
    """The loaded model and dictionaries."""

    model: torch.nn.Module
    tokenizer: object
    binding: ModelBinding
    dictionaries: dict[str, LoadedDictionary]
    context_length: int
    vocab_size: int
    eos_ids: frozenset[int]

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", ""))


def _context_length(model, tokenizer) -> int:
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", 0)
    return value if 0 < value < 1_000_000 else FALLBACK_CONTEXT


def _eos_ids(model, tokenizer) -> frozenset[int]:
    ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        ids = getattr(tokenizer, "eos_token_id", None)
    if ids is None:
        return frozenset()
    return frozenset([ids] if isinstance(ids, int) else ids)


def _load_dictionary(path: str, model, binding: ModelBinding) -> LoadedDictionary:
    bundle = load_bundle(path, expect=binding)
    target = hooks.resolve(model, bundle.hook_point)
    if target.d_in != bundle.dictionary.d_in:
        raise BundleError(
            f"{bundle.path / 'cfg.json'}: field 'd_in'={bundle.dictionary.d_in} but hook point "
            f"{bundle.hook_point!r} of the model has width {target.d_in}")
    features = FeatureTable.read(bundle.features_path, bundle.dictionary.d_sae)
    return LoadedDictionary(bundle, features)


def load_runtime(cfg: InferenceConfig) -> Runtime:
    """Load the model and every dictionary of `cfg`; raises the error of the first failure."""
    if not cfg.dictionaries:
        raise ConfigError("inference.dictionaries: give at least one --dictionary bundle")
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    model_dir = Path(cfg.model)
    binding = model_binding(model_dir)
    model, tokenizer = load_model(model_dir)
    model.requires_grad_(False)
    loaded: dict[str, LoadedDictionary] = {}
    for path in cfg.dictionaries:
        entry = _load_dictionary(path, model, binding)
        if entry.dictionary_id in loaded:
            raise ConfigError(f"inference.dictionaries: two bundles have dictionary_id "
                              f"{entry.dictionary_id!r} ({loaded[entry.dictionary_id].bundle.path}"
                              f", {entry.bundle.path})")
        loaded[entry.dictionary_id] = entry
    return Runtime(model, tokenizer, binding, loaded,
                   _context_length(model, tokenizer), int(model.config.vocab_size),
                   _eos_ids(model, tokenizer))


def serving_spec(runtime: Runtime, cfg: InferenceConfig) -> ServingSpec:
    """Limits and dictionary facts request validation checks against."""
    context = runtime.context_length
    max_prompt = min(cfg.max_prompt_tokens or context - 1, context - 1)
    limits = Limits(max_prompt_chars=cfg.max_prompt_chars, max_prompt_tokens=max_prompt,
                    max_new_tokens=cfg.max_new_tokens,
                    default_new_tokens=cfg.default_new_tokens,
                    max_stop_strings=cfg.max_stop_strings, context_length=context,
                    vocab_size=runtime.vocab_size)
    specs = {d.dictionary_id: DictionarySpec(d.d_sae, d.features.max_activation)
             for d in runtime.dictionaries.values()}
    tokenizer = runtime.tokenizer

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text))

    return ServingSpec(limits, specs, encode)
