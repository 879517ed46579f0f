"""The three presets of `featurewatch train all --preset ...`, as per-table field values.

- tiny: the whole chain in well under two minutes on 2 CPU cores (CI and the e2e tests).
- default: the paper's A/1 (4096 features) plus A/0 (512) on the ~25 MB corpus of the Python
  installation, in < 15 minutes on 2 cores.
- paper: the paper's sizes (context 250; dictionaries A/0 512, A/1 4096, A/2 16384 with the
  2023 recipe at batch 8192): long.
Dictionary hyperparameters come from `sae_config.RECOMMENDED` (tuned by the trainer's author),
read when a preset is resolved, not at import. Fields not named take the classes' defaults.
"""

from __future__ import annotations

from typing import Any

PRESET_NAMES = ("tiny", "default", "paper")

TINY: dict[str, Any] = {
    "corpus": {"max_bytes": 2_000_000},
    "tokenizer": {"vocab_size": 512, "context_size": 64},
    "lm": {"steps": 300, "batch_size": 32, "lr": 3e-3, "warmup_steps": 30, "eval_every": 100,
           "eval_contexts": 128},
    "activations": {"n_tokens": 400_000, "buffer_rows": 400_000, "shard_rows": 200_000},
    "sae": [("tiny-1k", "tiny", {})],
    "evaluate": {"max_tokens": 65_536, "loss_max_tokens": 16_384},
    "analyze": {},
}

DEFAULT: dict[str, Any] = {
    "corpus": {"max_bytes": 32_000_000},
    "tokenizer": {"vocab_size": 4096, "context_size": 128},
    "lm": {"steps": 1000, "batch_size": 32, "lr": 3e-3, "warmup_steps": 100, "eval_every": 250,
           "compile": True},
    "activations": {"n_tokens": 1_500_000, "buffer_rows": 1_500_000, "shard_rows": 500_000},
    "sae": [("a1-4096", "default", {}), ("a0-512", "default", {"d_sae": 512})],
    "evaluate": {},
    "analyze": {},
}

PAPER: dict[str, Any] = {
    "corpus": {"max_bytes": 1_000_000_000},
    "tokenizer": {"vocab_size": 8192, "context_size": 250},
    "lm": {"steps": 100_000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 1000,
           "eval_every": 2000, "compile": True},
    "activations": {"n_tokens": 20_000_000},
    "sae": [(f"a{i}-{size}", "paper", {"d_sae": size})
            for i, size in ((0, 512), (1, 4096), (2, 16384))],
    "evaluate": {},
    "analyze": {},
}

_PRESETS = {"tiny": TINY, "default": DEFAULT, "paper": PAPER}


def preset_values(name: str) -> dict[str, Any]:
    """Per-table values of preset `name`; "sae" is a list of SaeConfig field dicts."""
    from featurewatch.training.sae_config import RECOMMENDED

    values = dict(_PRESETS[name])
    values["sae"] = [{"name": sae_name, **RECOMMENDED[tuned], **changes}
                     for sae_name, tuned, changes in values["sae"]]
    return values
