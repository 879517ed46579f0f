"""`featurewatch features`: list, show and search the features of a dictionary bundle.

`search --positive FILE --negative FILE` ranks the features that separate two example sets
and prints (or writes with --output) a flag file the monitor loads as is; `search --label TEXT`
finds features by label. Settings come from flags, FEATUREWATCH_FEATURES_* variables, or the
[features] table of a TOML file given with --config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from featurewatch.config import load_config
from featurewatch.errors import ConfigError

ENV_PREFIX = "FEATUREWATCH_FEATURES_"
SORTS = ("feature", "density", "max_activation", "interp_score")
SEVERITIES = ("info", "warning", "critical")  # the monitor's flag severities


@dataclass(frozen=True)
class FeaturesConfig:
    """Where the bundle and model are, and how flags are written."""

    artifacts: str = "artifacts"
    """Artifacts directory holding dictionaries/ and model/."""
    dictionary: str = ""
    """Dictionary id (under artifacts/dictionaries) or a bundle directory; empty: the only one."""
    model: str = ""
    """Model directory for contrastive search; empty: artifacts/model."""
    top: int = 10
    """How many features to list or propose."""
    severity: str = "warning"
    """Severity written into proposed flags."""
    runbook_url: str = ""
    """runbook_url written into proposed flags."""

    def __post_init__(self) -> None:
        if self.top <= 0:
            raise ConfigError(f"features.top={self.top} must be positive")
        if self.severity not in SEVERITIES:
            raise ConfigError(f"features.severity={self.severity!r} must be one of "
                              f"{list(SEVERITIES)}")
        if self.runbook_url and not self.runbook_url.startswith(("http://", "https://")):
            raise ConfigError(f"features.runbook_url={self.runbook_url!r} must be an http(s) "
                              "URL")


def _config(ctx: click.Context, **flags: Any) -> FeaturesConfig:
    return load_config(FeaturesConfig, file=ctx.obj.get("config"), table="features",
                       env_prefix=ENV_PREFIX, overrides=flags)


def bundle_dir(cfg: FeaturesConfig) -> Path:
    """The bundle directory named by cfg.dictionary (an id or a path); ConfigError naming
    what was looked for and the bundles that exist."""
    root = Path(cfg.artifacts) / "dictionaries"
    found = sorted(p for p in root.glob("*") if (p / "cfg.json").is_file()) \
        if root.is_dir() else []
    if cfg.dictionary:
        path = Path(cfg.dictionary)
        for candidate in (path, root / cfg.dictionary):
            if (candidate / "cfg.json").is_file():
                return candidate
        raise ConfigError(f"--dictionary {cfg.dictionary!r}: neither {path} nor "
                          f"{root / cfg.dictionary} is a dictionary bundle (no cfg.json); "
                          f"bundles under {root}: {[p.name for p in found] or 'none'}")
    if not root.is_dir():
        raise ConfigError(f"--artifacts {cfg.artifacts!r}: {root} does not exist; point "
                          "--artifacts at a training run's artifacts directory or give "
                          "--dictionary DIR")
    if len(found) != 1:
        raise ConfigError(f"--dictionary is required: {root} holds "
                          f"{[p.name for p in found] or 'no bundles'}")
    return found[0]


def dictionary_id(path: Path) -> str:
    """The dictionary id recorded in a bundle's cfg.json (its directory name if absent)."""
    try:
        cfg = json.loads((path / "cfg.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path / 'cfg.json'}: cannot read the bundle config ({exc})") from None
    return str((cfg.get("featurewatch") or {}).get("dictionary_id") or path.name)


def _table(path: Path, neurons: bool):
    from featurewatch.training.analyze import NEURONS_FILE
    from featurewatch.training.bundle import FEATURES_FILE
    from featurewatch.training.feature_table import read_table

    return read_table(path / (NEURONS_FILE if neurons else FEATURES_FILE))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    table = Table(title=title)
    for key in rows[0] if rows else ("feature", "label"):
        table.add_column(key)
    for row in rows:
        table.add_row(*(_fmt(v) for v in row.values()))
    Console().print(table)


@click.group()
@click.option("--config", type=click.Path(dir_okay=False), help="TOML file ([features] table).")
@click.pass_context
def features(ctx: click.Context, config: str | None) -> None:
    """Inspect and search the features of a dictionary bundle.

    Settings: flags, else FEATUREWATCH_FEATURES_<FIELD> variables, else the [features] table
    of --config (fields: artifacts, dictionary, model, top, severity, runbook_url).

    \b
    Examples:
      featurewatch features list -d a1-4096 --sort interp_score
      featurewatch features show -d a1-4096 517
      featurewatch features search -d a1-4096 --positive pos.txt --negative neg.txt -o flags.yaml
      featurewatch features search -d a1-4096 --label base64
    """
    ctx.obj = {"config": config}


def _common(fn):
    fn = click.option("--artifacts", help="Artifacts directory [artifacts].")(fn)
    fn = click.option("--dictionary", "-d", help="Dictionary id or bundle directory.")(fn)
    return fn


@features.command("list", short_help="List features or neurons of a bundle.")
@_common
@click.option("--sort", type=click.Choice(SORTS), default="feature", show_default=True)
@click.option("--top", type=int, help="Rows to show [10].")
@click.option("--neurons", is_flag=True, help="List the model's neurons instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_features(ctx, sort: str, neurons: bool, as_json: bool, **flags) -> None:
    """List features (or neurons) with density, max activation, label and score."""
    cfg = _config(ctx, **flags)
    path = bundle_dir(cfg)
    frame = _table(path, neurons).sort(sort, descending=sort != "feature", nulls_last=True)
    cols = ["feature", "density", "max_activation", "interp_score", "label"]
    rows = frame.select(cols).head(cfg.top).to_dicts()
    _print_rows(rows, as_json, f"{'neurons' if neurons else 'features'} of "
                f"{path.name} ({frame.height} rows, sorted by {sort})")


@features.command("show", short_help="Show one feature's page in the terminal.")
@_common
@click.argument("feature", type=int)
@click.option("--neurons", is_flag=True, help="Show a neuron instead.")
@click.option("--examples", type=int, default=5, show_default=True, help="Examples to print.")
@click.option("--json", "as_json", is_flag=True, help="Print the full row as JSON.")
@click.pass_context
def show(ctx, feature: int, neurons: bool, examples: int, as_json: bool, **flags) -> None:
    """Show one feature: statistics, label, top examples and logit effects."""
    from featurewatch.training.features_view import render_feature

    cfg = _config(ctx, **flags)
    path = bundle_dir(cfg)
    frame = _table(path, neurons)
    if not 0 <= feature < frame.height:
        raise ConfigError(f"feature {feature} is out of range: {path.name} has "
                          f"{frame.height} {'neurons' if neurons else 'features'}")
    row = frame.row(feature, named=True)
    if as_json:
        click.echo(json.dumps(row, indent=1, default=str))
    else:
        render_feature(row, examples)


@features.command("search", short_help="Propose flags: contrastive or label search.")
@_common
@click.option("--positive", type=click.Path(dir_okay=False),
              help="Examples the flag should catch (one per line, or .jsonl).")
@click.option("--negative", type=click.Path(dir_okay=False),
              help="Examples it should not catch.")
@click.option("--label", "label_text", help="Search feature labels for this text instead.")
@click.option("--model", help="Model directory [artifacts/model].")
@click.option("--top", type=int, help="Features to propose [10].")
@click.option("--severity", help="Severity of the proposed flags [warning].")
@click.option("--runbook-url", help="runbook_url of the proposed flags.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Also write the proposed flags here, as the monitor's flag file (YAML).")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the flag file YAML.")
@click.pass_context
def search(ctx, positive, negative, label_text, output, as_yaml, **flags) -> None:
    """Rank features that separate --positive from --negative examples, or search labels.

    Prints precision and recall of each feature at its best threshold (activation ≥
    threshold flags an example); the flag file uses that threshold as min_activation.
    """
    from featurewatch.training.features_view import contrastive, label_search

    cfg = _config(ctx, **flags)
    if label_text is not None and (positive or negative):
        raise ConfigError("give either --label or --positive/--negative, not both")
    if label_text is not None:
        entries, rows, title = label_search(cfg, label_text)
    elif positive and negative:
        entries, rows, title = contrastive(cfg, positive, negative)
    else:
        raise ConfigError("search needs --positive FILE and --negative FILE, or --label TEXT")
    _emit(entries, rows, title, output, as_yaml)


def _emit(entries, rows, title: str, output: str | None, as_yaml: bool) -> None:
    from featurewatch.training.contrastive import flags_yaml

    text = flags_yaml(entries, [title])
    if output:
        Path(output).write_text(text, encoding="utf-8")
        click.echo(f"wrote {len(entries)} flags to {output}", err=True)
    if as_yaml:
        click.echo(text, nl=False)
    else:
        _print_rows(rows, False, title)
