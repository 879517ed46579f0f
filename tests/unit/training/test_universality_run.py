"""Universality end to end on a tiny run: model B is trained with seed + 1, a dictionary with the
primary's SaeConfig, and A's features and neurons are matched against B's on the same tokens."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from tiny_models import tiny_tokenizer

from featurewatch.training.activations import ActivationsConfig, harvest, open_pool
from featurewatch.training.analyze import AnalyzeConfig, analyze_run
from featurewatch.training.bundle import load_bundle, model_binding, save_bundle
from featurewatch.training.lm import LMConfig, load_model, train_lm
from featurewatch.training.sae_config import SaeConfig
from featurewatch.training.sae_train import train_dictionary

HOOK = "blocks.0.mlp.hook_post"
LM = LMConfig(model_id="tiny-a", n_layer=1, n_embd=32, n_inner=64, n_head=2, steps=12,
              batch_size=8, warmup_steps=2, eval_every=12, eval_contexts=8, threads=1)
ACTS = ActivationsConfig(hook_point=HOOK, n_tokens=2048, batch_size=16, buffer_rows=1024,
                         shard_rows=1024)
SAE = SaeConfig(name="tiny-128", d_sae=128, steps=30, batch_size=128, init_rows=512,
                resample_rows=512, log_every=10, checkpoint_every=1000)
CFG = AnalyzeConfig(n_tokens=512, top_k=4, window=2, n_scored_features=8, n_scored_neurons=8,
                    min_fires=2, bf16=False, threads=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run like `train all` leaves it: tokenizer, tokens, model A, pool, one bundle."""
    root = tmp_path_factory.mktemp("run")
    tiny_tokenizer(root / "tokenizer")
    rng = np.random.default_rng(0)
    (root / "tokens").mkdir()
    train = rng.integers(0, 300, (96, 32)).astype(np.int32)
    np.save(root / "tokens" / "train.npy", train)
    np.save(root / "tokens" / "val.npy", rng.integers(0, 300, (16, 32)).astype(np.int32))
    train_lm(LM, train, np.load(root / "tokens" / "val.npy"), root / "tokenizer",
             root / "model", progress=False)
    model, _ = load_model(root / "model")
    pool = root / "activations" / HOOK
    harvest(ACTS, model, train, pool, progress=False)
    trained = train_dictionary(SAE, open_pool(pool), progress=False)
    save_bundle(trained.dictionary, root / "dictionaries" / SAE.name, dictionary_id=SAE.name,
                binding=model_binding(root / "model"), hook_point=HOOK,
                scaling_factor=trained.scaling_factor,
                extra={"sae_config": dataclasses.asdict(SAE)})
    return root


def test_model_b_is_a_second_seed_with_a_matching_dictionary(run):
    analyze_run(run, CFG, progress=False)
    stats = json.loads((run / "model_b" / "train_stats.json").read_text())
    assert stats["seed"] == LM.seed + 1
    assert {k: v for k, v in stats["config"].items() if k not in ("seed", "model_id")} == \
        {k: v for k, v in dataclasses.asdict(LM).items() if k not in ("seed", "model_id")}
    assert model_binding(run / "model_b").model_id == "tiny-b"
    bundle_b = load_bundle(run / "universality" / "dictionary",
                           expect=model_binding(run / "model_b"))
    assert bundle_b.dictionary.d_sae == SAE.d_sae and bundle_b.hook_point == HOOK
    assert not (run / "universality" / "activations").exists()  # the pool was only for training


def test_universality_section_matches_every_live_code(run):
    analyze_run(run, CFG, progress=False)
    section = json.loads((run / "report" / "analysis.json").read_text())["universality"]
    assert section["dictionary"] == SAE.name
    assert 0 < section["n_neurons"] <= LM.n_inner and 0 < section["n_features"] <= SAE.d_sae
    for key in ("feature_best_corr", "neuron_best_corr"):
        values = np.array(section[key])
        assert ((values >= -1) & (values <= 1)).all()
    assert section["median_neuron"] == pytest.approx(np.median(section["neuron_best_corr"]),
                                                     abs=1e-4)
    assert sum(section["histogram"]["neurons"]) == section["n_neurons"]


def test_model_b_is_reused_while_its_inputs_are_unchanged(run):
    analyze_run(run, CFG, progress=False)
    weights = run / "model_b" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    analyze_run(run, CFG, progress=False)
    assert weights.stat().st_mtime_ns == before
