"""The order of `featurewatch train all`: every step, built only when the previous one ran
(a step's inputs, such as the model's weight files, exist only then)."""

from __future__ import annotations

from collections.abc import Iterator

from featurewatch.training.config import TrainConfig
from featurewatch.training.pipeline import Artifacts, Step


def chain_steps(cfg: TrainConfig, art: Artifacts, progress: bool = True) -> Iterator[Step]:
    """corpus → tokenizer → lm → activations → sae → evaluate → bundle → analyze.

    With activations.model_dir set (a model from elsewhere) the tokenizer and lm steps are
    left out: that model brings its own tokenizer.
    """
    from featurewatch.training import steps, steps_dictionary

    yield steps.corpus_step(cfg, art, progress)
    if not cfg.activations.model_dir:
        yield steps.tokenizer_step(cfg, art, progress)
        yield steps.lm_step(cfg, art, progress)
    yield steps.activations_step(cfg, art, progress)
    for sae in cfg.saes:
        yield steps_dictionary.sae_step(cfg, art, sae, progress=progress)
    for sae in cfg.saes:
        yield steps_dictionary.evaluate_step(cfg, art, sae.name, progress=progress)
        yield steps_dictionary.bundle_step(cfg, art, sae.name)
    yield from steps_dictionary.analyze_steps(cfg, art, [s.name for s in cfg.saes],
                                              progress=progress)
