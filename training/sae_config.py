"""`SaeConfig`: how one dictionary (sparse autoencoder) is trained.

Fields left at None take their recipe's default (`RECIPE_DEFAULTS`, from PAPER.md's sources);
`resolve(cfg)` fills them in. `RECOMMENDED` holds tuned values for the three presets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from featurewatch.config import check_fields
from featurewatch.errors import ConfigError

Recipe = Literal["relu-l1-2023", "relu-l1-2024", "topk"]
RECIPES: tuple[str, ...] = ("relu-l1-2023", "relu-l1-2024", "topk")

# Per-recipe defaults of the fields typed `... | None = None`.
RECIPE_DEFAULTS: dict[str, dict[str, float]] = {
    # [TM]: Adam, constant learning rate (value not stated), λ = 0.004 (run A/5).
    "relu-l1-2023": {"lr": 1e-4, "l1_coefficient": 0.004, "l1_warmup": 0.0, "lr_decay": 0.0,
                     "grad_clip": 0.0},
    # [AU]: lr ≈ 5e-5 decayed to 0 over the last 20 %, clip 1, λ warm-up over 5 %.
    "relu-l1-2024": {"lr": 5e-5, "l1_coefficient": 5.0, "l1_warmup": 0.05, "lr_decay": 0.2,
                     "grad_clip": 1.0},
    # OpenAI TopK: Adam lr 1e-4; no sparsity penalty (k sets L0).
    "topk": {"lr": 1e-4, "l1_coefficient": 0.0, "l1_warmup": 0.0, "lr_decay": 0.0,
             "grad_clip": 0.0},
}


@dataclass(frozen=True)
class SaeConfig:
    """One dictionary: architecture, recipe and optimisation (sparsify style, one doc per field)."""

    name: str = "sae"
    """Dictionary id: the folder under artifacts/dictionaries/ and the id services use."""
    recipe: Recipe = "relu-l1-2024"
    """Training recipe: relu-l1-2023 (Towards Monosemanticity), relu-l1-2024 (April 2024
    update) or topk (OpenAI TopK + AuxK)."""
    d_sae: int = 4096
    """Number of features (dictionary size)."""
    steps: int = 2000
    """Optimizer steps; each consumes batch_size activations."""
    batch_size: int = 4096
    """Activations per step, sampled without replacement from a shuffled order."""
    lr: float | None = None
    """Adam learning rate; None = the recipe's (2023: 1e-4, 2024: 5e-5, topk: 1e-4)."""
    l1_coefficient: float | None = None
    """Sparsity penalty λ; None = the recipe's (2023: 0.004, 2024: 5). Unused by topk."""
    l1_warmup: float | None = None
    """Fraction of steps over which λ rises linearly from 0; None = the recipe's (2024: 0.05)."""
    lr_decay: float | None = None
    """Fraction of steps at the end over which lr falls linearly to 0; None = the recipe's
    (2024: 0.2, else 0)."""
    grad_clip: float | None = None
    """Gradient-norm clipping threshold, 0 = off; None = the recipe's (2024: 1, else off)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam β1, β2 (no weight decay in any recipe)."""
    k: int = 32
    """topk: active features per token (L0 is exactly k)."""
    k_aux: int = 0
    """topk: dead features used by the AuxK loss; 0 = d_in // 2 (OpenAI's default)."""
    aux_coefficient: float = 1 / 32
    """topk: weight of the AuxK loss."""
    decoder_init_norm: float = 0.1
    """relu-l1-2024: norm of every decoder row at initialisation."""
    resample_at: tuple[float, ...] = (0.025, 0.05, 0.075, 0.1)
    """relu-l1-2023: when to resample dead features, as fractions of steps (paper: 25k, 50k,
    75k, 100k of 1M)."""
    dead_window: float = 0.0125
    """A feature that did not fire in this fraction of the steps is dead (paper: 12.5k of 1M);
    used for resampling, AuxK and the logged dead fraction."""
    resample_rows: int = 819_200
    """relu-l1-2023: activations on which the loss is computed to choose resampled inputs
    (paper: 819,200); capped at the pool size."""
    init_rows: int = 65_536
    """Activations sampled for the geometric median and the input scaling factor."""
    shuffle_chunk_rows: int = 8192
    """Contiguous rows read at once from the pool (memory-map friendly)."""
    shuffle_chunks: int = 8
    """Chunks read in shuffled order and shuffled together into one window of rows."""
    device: str = "auto"
    """Torch device: auto (cuda if available, else cpu), cpu, cuda, cuda:N."""
    autocast: bool = True
    """bf16 autocast for the matrix products (weights and optimizer stay float32)."""
    checkpoint_every: int = 500
    """Steps between checkpoints when a checkpoint directory is given (0 = only at the end)."""
    log_every: int = 50
    """Steps between entries of the training history (and progress-bar figures)."""
    seed: int = 0
    """Seed for initialisation, data order and resampling; equal seeds give equal runs."""

    def __post_init__(self) -> None:
        _validate(self)


def _require(ok: bool, field: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"sae.{field}={value!r} {why}")


def _validate(cfg: SaeConfig) -> None:
    _require(bool(cfg.name) and "/" not in cfg.name, "name", cfg.name,
             "must be a non-empty name without '/'")
    _require(cfg.recipe in RECIPES, "recipe", cfg.recipe, f"must be one of {list(RECIPES)}")
    check_fields(cfg, "sae", positive=("d_sae", "steps", "batch_size", "init_rows",
                                       "resample_rows", "shuffle_chunk_rows", "shuffle_chunks",
                                       "log_every"))
    for name in ("lr", "decoder_init_norm"):
        value = getattr(cfg, name)
        _require(value is None or value > 0, name, value, "must be positive")
    for name in ("l1_coefficient", "grad_clip", "aux_coefficient", "k_aux", "checkpoint_every"):
        value = getattr(cfg, name)
        _require(value is None or value >= 0, name, value, "must be ≥ 0")
    for name in ("l1_warmup", "lr_decay", "dead_window"):
        value = getattr(cfg, name)
        _require(value is None or 0 <= value <= 1, name, value, "must be a fraction in [0, 1]")
    _require(all(0 <= b < 1 for b in cfg.adam_betas) and len(cfg.adam_betas) == 2,
             "adam_betas", cfg.adam_betas, "must be two numbers in [0, 1)")
    _require(all(0 < t < 1 for t in cfg.resample_at), "resample_at", cfg.resample_at,
             "must be fractions of the run in (0, 1)")
    _require(cfg.k > 0, "k", cfg.k, "must be positive")
    if cfg.recipe == "topk":
        _require(cfg.k <= cfg.d_sae, "k", cfg.k, f"must be ≤ d_sae ({cfg.d_sae})")
        _require(cfg.k_aux <= cfg.d_sae, "k_aux", cfg.k_aux, f"must be ≤ d_sae ({cfg.d_sae})")
    _require(cfg.device == "auto" or cfg.device.split(":")[0] in ("cpu", "cuda"), "device",
             cfg.device, "must be auto, cpu, cuda or cuda:N")


def resolve(cfg: SaeConfig) -> SaeConfig:
    """`cfg` with every None field replaced by its recipe's default."""
    defaults = RECIPE_DEFAULTS[cfg.recipe]
    filled = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    return dataclasses.replace(cfg, **filled)


# Tuned SaeConfig values per preset (see the tuning notes in the report of issue 2):
# tiny: seconds on 2 cores; default: the paper's A/1 size (d_in 512 MLP neurons → 4096
# features), loss recovered ≥ 0.79 at L0 ≤ 20 in ~4-5 min of CPU; paper: the 2023 recipe at
# the paper's batch size.
RECOMMENDED: dict[str, dict[str, Any]] = {
    "tiny": {"recipe": "relu-l1-2024", "d_sae": 1024, "steps": 400, "batch_size": 1024,
             "lr": 1e-3, "l1_coefficient": 5.0},
    "default": {"recipe": "relu-l1-2024", "d_sae": 4096, "steps": 1200, "batch_size": 2048,
                "lr": 1e-3, "l1_coefficient": 5.0},
    "paper": {"recipe": "relu-l1-2023", "d_sae": 4096, "steps": 100_000, "batch_size": 8192,
              "lr": 1e-4, "l1_coefficient": 0.004},
}
