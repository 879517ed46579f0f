"""`featurewatch bench sae`: dictionary-training throughput against the measured matmul peak.

Both figures come from one run on one device, and each timed step of the real trainer
(`sae_train.Trainer`, bf16 autocast, resampling off) is followed by as long a slice of
large square bf16 products, so on a shared or throttled machine the ratio still means
something. Without `--activations` a random float32 array [max(65536, batch), 512] (the
paper's d_in) is made in memory, so the command runs anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from featurewatch.errors import ConfigError
from featurewatch.training.activation_pool import open_pool
from featurewatch.training.sae_config import RECIPES, SaeConfig
from featurewatch.training.sae_train import Trainer, pick_device

SYNTHETIC_D_IN = 512
SYNTHETIC_ROWS = 65_536


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MatmulRate:
    """Square [n, n] @ [n, n] products (2n³ FLOPs each), run in slices of a given duration."""

    def __init__(self, device: torch.device, dtype: torch.dtype, n: int) -> None:
        gen = torch.Generator(device=device).manual_seed(0)
        self.a, self.b = (torch.randn(n, n, device=device, dtype=dtype, generator=gen)
                          for _ in range(2))
        self.device, self.flops, self.seconds = device, 0.0, 0.0
        for _ in range(2):  # the first one pays for kernel selection and page faults
            _sync(device)
            start = time.perf_counter()
            self.a @ self.b
            _sync(device)
        self.per_product = time.perf_counter() - start

    def run(self, seconds: float) -> None:
        """About `seconds` of products, added to the totals."""
        reps = max(1, round(seconds / self.per_product))
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(reps):
            self.a @ self.b
        _sync(self.device)
        self.seconds += time.perf_counter() - start
        self.flops += 2.0 * self.a.shape[0] ** 3 * reps

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9


def step_flops(cfg: SaeConfig, d_in: int) -> float:
    """Matrix-product FLOPs of one training step (elementwise work is not counted).

    ReLU recipes: 5 dense products of 2·B·d_in·d_sae FLOPs — encoder and decoder forward,
    and in backward the two weight gradients plus the gradient of f; the input needs no
    gradient, so the 6th product of the usual 6·N per token (3 per weight) is never done:
    10·B·d_in·d_sae. TopK decodes sparsely (k rows per token), so only the encoder's forward
    and weight gradient are dense: 4·B·d_in·d_sae + 6·B·k·d_in.
    """
    b, n = cfg.batch_size, d_in * cfg.d_sae
    if cfg.recipe == "topk":
        return 4.0 * b * n + 6.0 * b * cfg.k * d_in
    return 10.0 * b * n


def time_trainer(trainer: Trainer, warmup: int, steps: int, peak: MatmulRate,
                 progress: Progress) -> float:
    """Seconds spent in `steps` timed training steps after `warmup` untimed ones.

    Each timed step is followed by as long a slice of peak products, so both figures see
    the same share of a machine that other work also uses (their ratio is what counts).
    """
    task = progress.add_task("warm-up", total=warmup + steps)
    for _ in range(warmup):
        trainer.train_step(stats=False)
        progress.advance(task)
    progress.update(task, description="timed steps")
    elapsed = 0.0
    for _ in range(steps):
        _sync(trainer.device)
        start = time.perf_counter()
        trainer.train_step(stats=False)
        _sync(trainer.device)
        seconds = time.perf_counter() - start
        elapsed += seconds
        peak.run(seconds)
        progress.advance(task)
    return elapsed


def load_data(path: Path | None, rows: int, seed: int) -> tuple[Any, str]:
    """The activation array and a description of where it came from."""
    if path is not None:
        return open_pool(path), str(path)
    data = np.random.default_rng(seed).standard_normal((rows, SYNTHETIC_D_IN), np.float32)
    return data, f"synthetic [{rows}, {SYNTHETIC_D_IN}] float32"


@dataclass(frozen=True)
class BenchResult:
    """One benchmark run; derived figures are properties so they agree with the raw ones."""

    device: str
    source: str
    recipe: str
    d_in: int
    d_sae: int
    batch_size: int
    steps: int
    elapsed_s: float
    threads: int
    flops_per_step: float
    bf16_peak_gflops: float
    fp32_peak_gflops: float

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * self.steps / self.elapsed_s

    @property
    def achieved_gflops(self) -> float:
        return self.flops_per_step * self.steps / self.elapsed_s / 1e9

    @property
    def fraction_of_peak(self) -> float:
        return self.achieved_gflops / self.bf16_peak_gflops

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "tokens_per_s": self.tokens_per_s,
                "achieved_gflops": self.achieved_gflops,
                "fraction_of_peak": self.fraction_of_peak}


def run_bench(cfg: SaeConfig, data: Any, source: str, warmup: int, peak_size: int,
              progress: Progress) -> BenchResult:
    """Build the trainer, time it interleaved with bf16 peak products, then the fp32 peak."""
    trainer = Trainer(cfg, data, None)
    device = trainer.device
    size = peak_size or (8192 if device.type == "cuda" else 2048)
    bf16 = MatmulRate(device, torch.bfloat16, size)
    elapsed = time_trainer(trainer, warmup, cfg.steps - warmup, bf16, progress)
    task = progress.add_task("fp32 matmul peak", total=None)
    fp32 = MatmulRate(device, torch.float32, size)
    fp32.run(min(elapsed, 1.0))
    progress.remove_task(task)
    return BenchResult(str(device), source, cfg.recipe, trainer.d_in, cfg.d_sae,
                       cfg.batch_size, cfg.steps - warmup, elapsed, torch.get_num_threads(),
                       step_flops(cfg, trainer.d_in), bf16.gflops, fp32.gflops)


def print_table(r: BenchResult, console: Console) -> None:
    threads = f", {r.threads} CPU threads" if r.device == "cpu" else ""
    table = Table(title=f"sae training throughput — {r.recipe}, d_in {r.d_in} → d_sae "
                        f"{r.d_sae}, batch {r.batch_size}, {r.device}{threads}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for row in (("activations", r.source),
                ("timed steps", f"{r.steps} in {r.elapsed_s:.3f} s"),
                ("tokens/s", f"{r.tokens_per_s:,.0f}"),
                ("achieved GFLOP/s (matmuls)", f"{r.achieved_gflops:,.1f}"),
                ("bf16 matmul peak GFLOP/s", f"{r.bf16_peak_gflops:,.1f}"),
                ("fraction of bf16 peak", f"{r.fraction_of_peak:.1%}"),
                ("fp32 matmul peak GFLOP/s (reference)", f"{r.fp32_peak_gflops:,.1f}")):
        table.add_row(*row)
    console.print(table)


@click.command("sae")
@click.option("--activations", type=click.Path(path_type=Path), default=None,
              help="Pool directory, .npy or .safetensors [N, d_in]; default: synthetic "
                   "random [65536, 512] float32 in memory.")
@click.option("--recipe", type=click.Choice(RECIPES), default="relu-l1-2024", show_default=True)
@click.option("--d-sae", type=int, default=4096, show_default=True, help="Dictionary size.")
@click.option("--batch-size", type=int, default=4096, show_default=True)
@click.option("--steps", type=int, default=20, show_default=True, help="Timed steps.")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed steps first.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--peak-size", type=int, default=0,
              help="Side of the square matmuls for the peak (0: 2048 on CPU, 8192 on GPU).")
@click.option("--threads", type=int, default=0,
              help="CPU threads (0: torch's default). On a machine shared with other work, "
                   "1 thread avoids waiting for a descheduled one at every operation.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_sae(activations: Path | None, recipe: str, d_sae: int, batch_size: int, steps: int,
              warmup: int, device: str, peak_size: int, threads: int, seed: int,
              as_json: bool) -> None:
    """Dictionary-training tokens/s and GFLOP/s vs the bf16 matmul peak, in one run.

    Achieved GFLOP/s counts the step's matrix products only (see `step_flops`).
    """
    if steps <= 0 or warmup < 0 or peak_size < 0 or threads < 0:
        raise ConfigError(f"--steps={steps} must be positive; --warmup={warmup}, "
                          f"--peak-size={peak_size} and --threads={threads} ≥ 0")
    if threads:
        torch.set_num_threads(threads)
    # steps counts warm-up too so that the trainer's schedules (λ warm-up, lr decay) cover
    # every step taken; resampling is off because it is a rare event, not the steady state.
    cfg = SaeConfig(name="bench", recipe=recipe, d_sae=d_sae, batch_size=batch_size,
                    steps=warmup + steps, device=device, seed=seed, resample_at=(),
                    init_rows=min(SYNTHETIC_ROWS, 8 * batch_size))
    pick_device(device)  # an unavailable cuda fails before any data is made
    data, source = load_data(activations, max(SYNTHETIC_ROWS, batch_size), seed)
    if len(data) < batch_size:
        raise ConfigError(f"activation file {source}: holds {len(data)} rows, fewer than "
                          f"--batch-size {batch_size}")
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json) as progress:
        result = run_bench(cfg, data, source, warmup, peak_size, progress)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=1))
    else:
        print_table(result, Console())
