"""The `featurewatch` command. Subcommands are imported only when invoked, so that
`featurewatch serve monitor` never imports torch and `--help` stays fast."""

from __future__ import annotations

import importlib
import sys

import click

from featurewatch.errors import FeaturewatchError


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules, named as 'module:attribute'."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            target, _help = self.lazy[name]
            module, attr = target.split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table so listing commands imports nothing heavy.
        rows = [(name, self.lazy[name][1]) for name in self.lazy]
        rows += [(name, cmd.get_short_help_str(60)) for name, cmd in self.commands.items()]
        rows.sort()
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


SERVE = {
    "inference": ("featurewatch.services.inference.cli:serve_inference",
                  "Run the gRPC inference service (generation + feature traces)."),
    "monitor": ("featurewatch.services.monitor.cli:serve_monitor",
                "Run the monitor: ingest trace events into Redis, export /metrics."),
}
BENCH = {
    "sae": ("featurewatch.training.bench:bench_sae",
            "Dictionary training throughput vs the measured bf16 matmul peak."),
    "inference": ("featurewatch.services.inference.bench:bench_inference",
                  "Per-token latency with/without trace, tokens/s at 1/4/16 streams."),
    "monitor": ("featurewatch.services.monitor.bench:bench_monitor",
                "Ingest increments/s vs redis-benchmark HINCRBY; alert latency."),
}
TOP = {
    "train": ("featurewatch.training.cli:train",
              "The training job: corpus, tokenizer, lm, activations, sae, evaluate, analyze."),
    "features": ("featurewatch.training.features_cli:features",
                 "Inspect and search the features of a dictionary bundle."),
    "generate": ("featurewatch.services.inference.client:generate",
                 "Generate text from a running inference service, with per-token features."),
    "alerts": ("featurewatch.services.monitor.alerts_cli:alerts",
               "Render Prometheus alert rules and Alertmanager config from the flags."),
    "up": ("featurewatch.up:up",
           "Train if needed, start Redis + services (+ Prometheus), send demo traffic."),
}


@click.group(cls=LazyGroup, lazy=TOP)
@click.version_option(package_name="featurewatch")
def cli() -> None:
    """featurewatch: interpretable features of a language model, traced per token and monitored."""


@cli.group(cls=LazyGroup, lazy=SERVE)
def serve() -> None:
    """Run a featurewatch service."""


@cli.group(cls=LazyGroup, lazy=BENCH)
def bench() -> None:
    """Benchmarks that report figures as ratios measured in one run."""


def main() -> None:
    """Console entry point: user errors become one clear line and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FeaturewatchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
