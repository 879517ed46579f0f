"""`featurewatch train …`: every step of the training job as a subcommand, plus `all`.

Each subcommand resolves the configuration (preset < --config TOML < FEATUREWATCH_* env <
flags), runs its step(s) through the pipeline (skipping unchanged work, `--force` reruns) and
shows progress bars with live figures.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import click

from featurewatch.training.pipeline import Artifacts, Pipeline, StepResult
from featurewatch.training.presets import PRESET_NAMES


def common_options(fn):
    """--artifacts, --preset, --config, --force, --quiet, --print-config for every step."""
    options = [
        click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
                     default="artifacts", show_default=True, envvar="FEATUREWATCH_ARTIFACTS",
                     help="Artifacts directory (read and written by every step)."),
        click.option("--preset", type=click.Choice(PRESET_NAMES), default=None,
                     help="Starting values: tiny (CI, < 2 min), default (paper's A/1, "
                          "< 15 min on 2 cores), paper (the paper's sizes). "
                          "[default: the config file's, else default]"),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="TOML file with [corpus], [lm], [[sae]] … tables."),
        click.option("--force", is_flag=True, help="Rerun even if inputs are unchanged."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
        click.option("--print-config", is_flag=True,
                     help="Print the resolved configuration as JSON and exit."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


class Job:
    """The resolved configuration, artifacts paths and step runner of one command."""

    def __init__(self, opts: dict[str, Any], overrides: dict[str, dict[str, Any]],
                 only_saes: tuple[str, ...] = ()) -> None:
        from featurewatch.training.config import load_train_config

        self.cfg = load_train_config(opts["preset"], opts["config_file"], overrides, only_saes)
        self.art = Artifacts(opts["artifacts"])
        self.progress = not opts["quiet"]
        self.pipeline = Pipeline(self.art, force=opts["force"],
                                 echo=lambda msg: click.echo(msg, err=True))
        self.print_only = opts["print_config"]

    def print_config(self) -> bool:
        """Print the configuration if asked to; True means: stop here."""
        if self.print_only:
            from featurewatch.training.config import describe

            click.echo(json.dumps(describe(self.cfg), indent=2, default=str))
        return self.print_only

    def run(self, steps) -> list[StepResult]:
        """Run `steps` in order; an iterator's next step is built only after this one ran."""
        return [self.pipeline.run(step) for step in steps]


def _job(overrides_from: dict[str, tuple[str, ...]] | None = None):
    """Decorator: split the step's own flags into per-table overrides and build a Job."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(**kwargs):
            common = {k: kwargs.pop(k) for k in ("artifacts", "preset", "config_file", "force",
                                                 "quiet", "print_config")}
            overrides: dict[str, dict[str, Any]] = {}
            for table, names in (overrides_from or {}).items():
                overrides[table] = {n: kwargs.pop(n) for n in names}
            only = tuple(kwargs.pop("name", ()) or ())
            job = Job(common, overrides, only)
            if job.print_config():
                return None
            return fn(job, **kwargs)
        return inner
    return wrap


@click.group()
def train() -> None:
    """The training job: corpus → tokenizer → lm → activations → sae → evaluate → bundle →
    analyze. Every step writes under --artifacts and skips work whose inputs are unchanged."""


@train.command()
@common_options
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True),
              help="Directory of text files, .jsonl or .parquet (repeatable). "
                   "Default: the Python installation's own text.")
@click.option("--jsonl-field", default=None, help="JSONL field with the text [text].")
@click.option("--parquet-column", default=None, help="Parquet column with the text [text].")
@click.option("--max-bytes", type=int, default=None, help="Stop after this many bytes.")
@_job({"corpus": ("sources", "jsonl_field", "parquet_column", "max_bytes")})
def corpus(job: Job) -> None:
    """Step 1: assemble the corpus (shards + manifest.json + validation split)."""
    from featurewatch.training.steps import corpus_step

    _report(job.run([corpus_step(job.cfg, job.art, job.progress)]))


@train.command()
@common_options
@click.option("--vocab-size", type=int, default=None, help="BPE vocabulary size.")
@click.option("--context-size", type=int, default=None, help="Tokens per context.")
@_job({"tokenizer": ("vocab_size", "context_size")})
def tokenizer(job: Job) -> None:
    """Step 2: train the byte-level BPE tokenizer and write tokens/{train,val}.npy."""
    from featurewatch.training.steps import tokenizer_step

    _report(job.run([tokenizer_step(job.cfg, job.art, job.progress)]))


@train.command()
@common_options
@click.option("--steps", type=int, default=None, help="Optimizer steps.")
@click.option("--batch-size", type=int, default=None, help="Contexts per step.")
@click.option("--lr", type=float, default=None, help="Peak learning rate.")
@click.option("--seed", type=int, default=None, help="Initialisation and batch-order seed.")
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the step.")
@_job({"lm": ("steps", "batch_size", "lr", "seed", "compile")})
def lm(job: Job) -> None:
    """Step 3: train the one-layer language model (reports validation loss and tokens/s)."""
    from featurewatch.training.steps import lm_step

    _report(job.run([lm_step(job.cfg, job.art, job.progress)]))


def model_options(fn):
    fn = click.option("--hook-point", default=None,
                      help="Hook point, e.g. blocks.0.mlp.hook_post.")(fn)
    return click.option("--model", "model_dir", default=None,
                        type=click.Path(exists=True, file_okay=False),
                        help="Any local HF causal LM directory [artifacts/model].")(fn)


@train.command()
@common_options
@model_options
@click.option("--n-tokens", type=int, default=None, help="Activation rows to harvest.")
@_job({"activations": ("model_dir", "hook_point", "n_tokens")})
def activations(job: Job) -> None:
    """Step 4: harvest activations at a hook point into a shuffled on-disk pool."""
    from featurewatch.training.steps import activations_step

    _report(job.run([activations_step(job.cfg, job.art, job.progress)]))


def sae_options(fn):
    for name, kind, text in (("--steps", int, "Training steps."),
                             ("--batch-size", int, "Activations per step."),
                             ("--lr", float, "Learning rate."),
                             ("--l1-coefficient", float, "Sparsity penalty λ."),
                             ("--d-sae", int, "Number of features."),
                             ("--seed", int, "Seed.")):
        fn = click.option(name, type=kind, default=None, help=text)(fn)
    return fn


def name_option(fn):
    return click.option("--name", multiple=True,
                        help="Only these dictionaries (repeatable) [all configured].")(fn)


@train.command()
@common_options
@click.option("--activations", "pool", default=None, type=click.Path(exists=True),
              help="Pool directory, .npy or .safetensors [N, d_in] [the harvested pool].")
@model_options
@name_option
@sae_options
@_job({"sae": ("steps", "batch_size", "lr", "l1_coefficient", "d_sae", "seed"),
       "activations": ("model_dir", "hook_point")})
def sae(job: Job, pool: str | None) -> None:
    """Step 5: train the configured dictionaries on an activation pool."""
    from featurewatch.training.steps_dictionary import sae_step

    _report(job.run([sae_step(job.cfg, job.art, s, pool=pool, progress=job.progress)
                     for s in job.cfg.saes]))


@train.command()
@common_options
@model_options
@name_option
@_job({"activations": ("model_dir", "hook_point")})
def evaluate(job: Job) -> None:
    """Step 6: MSE, FVU, L0, dead/dense features and loss recovered on held-out tokens."""
    from featurewatch.training.steps_dictionary import evaluate_step

    _report(job.run([evaluate_step(job.cfg, job.art, s.name, progress=job.progress)
                     for s in job.cfg.saes]))


@train.command()
@common_options
@name_option
@_job()
def bundle(job: Job) -> None:
    """Step 7: write the bundles (cfg.json, sae_weights.safetensors, metrics, history)."""
    from featurewatch.training.steps_dictionary import bundle_step

    _report(job.run([bundle_step(job.cfg, job.art, s.name) for s in job.cfg.saes]))


@train.command()
@common_options
@model_options
@name_option
@_job({"activations": ("model_dir", "hook_point")})
def analyze(job: Job) -> None:
    """Step 8: per-feature statistics, feature browser and the whole-run report."""
    from featurewatch.training.steps_dictionary import analyze_steps

    names = [s.name for s in job.cfg.saes]
    _report(job.run(analyze_steps(job.cfg, job.art, names, progress=job.progress)))


@train.command(name="all")
@common_options
@click.option("--source", "sources", multiple=True, type=click.Path(exists=True),
              help="Corpus source(s) instead of the Python installation's text.")
@model_options
@_job({"corpus": ("sources",), "activations": ("model_dir", "hook_point")})
def all_steps(job: Job) -> None:
    """Run the whole chain: corpus → tokenizer → lm → activations → sae → evaluate → bundle →
    analyze (with --model, the tokenizer and lm steps are left out)."""
    from featurewatch.training.chain import chain_steps

    start = time.perf_counter()
    _report(job.run(chain_steps(job.cfg, job.art, job.progress)))
    _summary(job, time.perf_counter() - start)


def _report(results: list[StepResult]) -> None:
    for result in results:
        if result.skipped or not result.summary:
            continue
        figures = ", ".join(f"{k}={_fmt(v)}" for k, v in result.summary.items()
                            if isinstance(v, (int, float, str)))
        click.echo(f"{result.name}: {figures}")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _summary(job: Job, seconds: float) -> None:
    from featurewatch.training.bundle import METRICS_FILE

    click.echo(f"train all --preset {job.cfg.preset}: {seconds:.1f} s wall time")
    for sae_cfg in job.cfg.saes:
        path = job.art.dictionary(sae_cfg.name) / METRICS_FILE
        if path.is_file():
            metrics = json.loads(path.read_text())
            keys = ("loss_recovered", "l0", "fvu", "dead", "ultralow", "dense")
            figures = ", ".join(f"{k}={_fmt(metrics[k])}" for k in keys if k in metrics)
            click.echo(f"  {sae_cfg.name}: {figures}")
