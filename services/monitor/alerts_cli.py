"""`featurewatch alerts`: render Prometheus rules and an Alertmanager config from the flags."""

from __future__ import annotations

import click
from rich.console import Console

from featurewatch.services.monitor.alerts import AlertOptions, write_alerts
from featurewatch.services.monitor.dictionaries import read_bundle_info
from featurewatch.services.monitor.flags import check_in_dictionary, read_flags_file


@click.group("alerts")
def alerts() -> None:
    """Alert rules on flagged features and on the monitoring pipeline itself."""


def _label(ctx, param, values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} must be KEY=VALUE")
        pairs.append((key, val))
    return tuple(pairs)


@alerts.command("render")
@click.option("--flags", "flags_file", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="YAML file with a 'flags:' list (the same file the monitor loads).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Directory for the rule file, the PrometheusRule and alertmanager.yml.")
@click.option("--dictionary", "dictionaries", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Bundle directories: check each flag's dictionary and feature id against "
                   "them (repeatable).")
@click.option("--for", "flag_for", default=AlertOptions.flag_for, show_default=True,
              help="How long a flagged feature must keep hitting before it alerts.")
@click.option("--monitor-job", default=AlertOptions.monitor_job, show_default=True,
              help="Prometheus job label of the monitor targets.")
@click.option("--lag-threshold", type=int, default=AlertOptions.lag_threshold,
              show_default=True, help="Consumer lag that alerts when it keeps growing.")
@click.option("--drift-threshold", type=float, default=AlertOptions.drift_threshold,
              show_default=True, help="JS divergence (bits) that alerts as drift.")
@click.option("--runbook-base", default=AlertOptions.runbook_base, show_default=True,
              help="Runbook page of the operational alerts (anchors per alert).")
@click.option("--rule-label", "rule_labels", multiple=True, callback=_label,
              help="KEY=VALUE label on the PrometheusRule, e.g. release=prometheus.")
@click.option("--webhook-url", default="http://127.0.0.1:5001/alerts", show_default=True,
              help="Webhook receiver of the example Alertmanager config.")
def render(flags_file, out_dir, dictionaries, webhook_url, **options) -> None:
    """Write featurewatch-rules.yml, featurewatch-prometheusrule.yaml and alertmanager.yml.

    One FlaggedFeatureFiring rule per flag (its severity, name and runbook), one for flags
    added at run time through the API, and operational alerts: monitor down, Redis down, lag
    growing, events dead-lettered, trace events dropped by inference, feature drift.
    """
    flags = read_flags_file(flags_file)
    if dictionaries:
        bundles = {info.dictionary_id: info for info in map(read_bundle_info, dictionaries)}
        for i, flag in enumerate(flags):
            info = bundles.get(flag.dictionary_id)
            check_in_dictionary(flag, info.d_sae if info else None, lambda: list(bundles),
                                f"flags file {flags_file}, flags[{i}]: ")
    paths = write_alerts(flags, out_dir, AlertOptions(**options), webhook_url)
    console = Console()
    console.print(f"{len(flags)} flag rule(s) + run-time flag rule + operational rules:")
    for path in paths:
        console.print(f"  {path}")
