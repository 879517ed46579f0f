"""Prometheus alert rules from the flags, plus operational alerts and an Alertmanager example.

Per flag of the flags file: a `FlaggedFeatureFiring` rule with the flag's severity, summary,
description and runbook. Flags added at run time through the API are covered by one more
`FlaggedFeatureFiring` rule that takes severity, name and runbook from the metrics
(`featurewatch_monitor_flag_info`) and skips the features that have their own rule.
Aggregated series use `max by (...)`: every monitor replica exports the same Redis totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from featurewatch.services.monitor.flags import Flag

RULES_FILE = "featurewatch-rules.yml"
PROMETHEUS_RULE_FILE = "featurewatch-prometheusrule.yaml"
ALERTMANAGER_FILE = "alertmanager.yml"
FLAG_ALERT = "FlaggedFeatureFiring"
RUNBOOK_BASE = "https://github.com/featurewatch/featurewatch/blob/main/k8s/RUNBOOKS.md"
M = "featurewatch_monitor_"


@dataclass(frozen=True)
class AlertOptions:
    """Knobs of the rendered rules (CLI flags of `featurewatch alerts render`)."""

    flag_for: str = "30s"
    """How long a flagged feature must keep hitting before its alert fires."""
    monitor_job: str = "featurewatch-monitor"
    """Prometheus `job` label of the monitor targets (the Service name under the operator)."""
    lag_threshold: int = 1000
    """Consumer lag (entries) above which a growing lag alerts."""
    drift_threshold: float = 0.3
    """Jensen-Shannon drift (bits) above which FeatureDrift alerts."""
    runbook_base: str = RUNBOOK_BASE
    """Runbooks of the operational alerts (and of flags without runbook_url), by anchor."""
    rule_labels: tuple[tuple[str, str], ...] = ()
    """Extra metadata labels of the PrometheusRule (to match a Prometheus ruleSelector)."""


def _q(value: str) -> str:
    """A PromQL string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _selector(flag: Flag) -> str:
    return f"{{dictionary={_q(flag.dictionary_id)}, feature={_q(str(flag.feature))}}}"


def _flag_annotations(runbook_url: str) -> dict[str, str]:
    return {
        "summary": "Flagged feature {{ $labels.feature }} ({{ $labels.name }}) of dictionary "
                   "{{ $labels.dictionary }} is firing",
        "description": "{{ $value }} trace events in the monitor window reached the flag's "
                       "min_activation for feature {{ $labels.feature }} ({{ $labels.name }}) "
                       "of {{ $labels.dictionary }}.",
        "runbook_url": runbook_url,
    }


def flag_rule(flag: Flag, options: AlertOptions) -> dict[str, Any]:
    """The alert of one flag: its window hits stay above 0 for `flag_for`."""
    expr = (f"max by (dictionary, feature, name, severity) "
            f"({M}flagged_feature_window_hits{_selector(flag)}) > 0")
    return {
        "alert": FLAG_ALERT, "expr": expr, "for": options.flag_for,
        "labels": {"severity": flag.severity, "dictionary": flag.dictionary_id,
                   "feature": str(flag.feature)},
        "annotations": _flag_annotations(
            flag.runbook_url or f"{options.runbook_base}#flaggedfeaturefiring"),
    }


def runtime_flag_rule(flags: list[Flag], options: AlertOptions) -> dict[str, Any]:
    """One rule for flags that exist only in Redis (added through the API)."""
    expr = (f"(max by (dictionary, feature, name, severity) ({M}flagged_feature_window_hits) > 0)"
            f"\n* on (dictionary, feature) group_left (runbook_url)"
            f"\nmax by (dictionary, feature, runbook_url) ({M}flag_info)")
    if flags:
        static = " or ".join(f"{M}flag_info{_selector(f)}" for f in flags)
        expr += f"\nunless on (dictionary, feature) ({static})"
    return {"alert": FLAG_ALERT, "expr": expr, "for": options.flag_for,
            "labels": {"source": "api"},
            "annotations": _flag_annotations("{{ if $labels.runbook_url }}"
                                             "{{ $labels.runbook_url }}{{ else }}"
                                             f"{options.runbook_base}#flaggedfeaturefiring"
                                             "{{ end }}")}


def _ops_rule(name: str, expr: str, duration: str, severity: str, summary: str,
              description: str, options: AlertOptions) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": duration, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description,
                            "runbook_url": f"{options.runbook_base}#{name.lower()}"}}


def operational_rules(options: AlertOptions) -> list[dict[str, Any]]:
    """Alerts on the pipeline itself: down, lagging, dead letters, dropped events, drift."""
    job = _q(options.monitor_job)
    return [
        _ops_rule("FeaturewatchMonitorDown", f"absent(up{{job={job}}} == 1)", "2m", "critical",
                  "No featurewatch monitor replica is up",
                  f"Prometheus has no healthy target of job {options.monitor_job}: trace events "
                  "are not being counted and flagged features cannot alert.", options),
        _ops_rule("FeaturewatchMonitorRedisDown", f"{M}redis_up == 0", "2m", "critical",
                  "Monitor {{ $labels.instance }} cannot reach Redis",
                  "The monitor's Redis queries fail; aggregates and flag alerts are stale.",
                  options),
        _ops_rule("FeaturewatchMonitorLagGrowing",
                  f"max by (dictionary) ({M}consumer_lag) > {options.lag_threshold}\n"
                  f"and max by (dictionary) (deriv({M}consumer_lag[5m])) > 0", "10m", "warning",
                  "Trace events of {{ $labels.dictionary }} pile up faster than they are counted",
                  "{{ $value }} entries are waiting and the backlog keeps growing: add monitor "
                  "replicas or check Redis.", options),
        _ops_rule("FeaturewatchEventsDeadLettered",
                  f"max by (dictionary) (increase({M}events_dead_lettered_total[10m])) > 0", "0s",
                  "warning", "Malformed trace events of {{ $labels.dictionary }} were dead-lettered",
                  "{{ $value }} events in the last 10 minutes could not be counted; their reasons "
                  "are in the dictionary's deadletter stream.", options),
        _ops_rule("FeaturewatchTraceEventsDropped",
                  "sum by (job, reason) "
                  "(increase(featurewatch_inference_trace_events_dropped_total[10m])) > 0", "0s",
                  "warning", "The inference service dropped trace events ({{ $labels.reason }})",
                  "{{ $value }} trace events never reached Redis in the last 10 minutes: "
                  "monitoring undercounts feature firing.", options),
        _ops_rule("FeaturewatchFeatureDrift",
                  f"max by (dictionary) ({M}drift_js_divergence) > {options.drift_threshold}",
                  "30m", "info", "Feature firing of {{ $labels.dictionary }} drifted from training",
                  "Jensen-Shannon divergence {{ $value }} bits between live firing and the "
                  "training-time densities: traffic differs from the training corpus.", options),
    ]


def render_rules(flags: list[Flag], options: AlertOptions) -> dict[str, Any]:
    """The Prometheus rule file (`groups:`)."""
    flag_rules = [flag_rule(f, options) for f in flags]
    flag_rules.append(runtime_flag_rule(flags, options))
    return {"groups": [
        {"name": "featurewatch-flagged-features", "rules": flag_rules},
        {"name": "featurewatch-operations", "rules": operational_rules(options)},
    ]}


def prometheus_rule(rules: dict[str, Any], options: AlertOptions,
                    name: str = "featurewatch-alerts") -> dict[str, Any]:
    """The same groups as a prometheus-operator PrometheusRule."""
    labels = {"app.kubernetes.io/name": "featurewatch", "app.kubernetes.io/component": "monitor",
              **dict(options.rule_labels)}
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": name, "labels": labels}, "spec": rules}


def alertmanager_config(webhook_url: str) -> dict[str, Any]:
    """An Alertmanager config: critical alerts at once, the rest grouped; one webhook."""
    receiver = {"url": webhook_url, "send_resolved": True}
    return {
        "route": {
            "receiver": "featurewatch-default",
            "group_by": ["alertname", "dictionary", "feature"],
            "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h",
            "routes": [{"matchers": ['severity="critical"'], "receiver": "featurewatch-critical",
                        "group_wait": "0s", "repeat_interval": "1h"}],
        },
        "receivers": [{"name": "featurewatch-default", "webhook_configs": [receiver]},
                      {"name": "featurewatch-critical", "webhook_configs": [receiver]}],
        "inhibit_rules": [{
            # While no monitor runs, its backlog alerts say nothing new.
            "source_matchers": ['alertname="FeaturewatchMonitorDown"'],
            "target_matchers": ['alertname=~"FeaturewatchMonitorLagGrowing|'
                                'FeaturewatchEventsDeadLettered"'],
        }],
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, long lines unwrapped."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(data: dict[str, Any], path: Path, header: str) -> Path:
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
    path.write_text(f"# {header}\n{text}", encoding="utf-8")
    return path


def write_alerts(flags: list[Flag], out_dir: str | Path, options: AlertOptions,
                 webhook_url: str) -> list[Path]:
    """Write the rule file, the PrometheusRule and the Alertmanager example into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rules = render_rules(flags, options)
    note = "Generated by `featurewatch alerts render`; edit the flags file, not this."
    return [
        _dump(rules, out / RULES_FILE, note),
        _dump(prometheus_rule(rules, options), out / PROMETHEUS_RULE_FILE, note),
        _dump(alertmanager_config(webhook_url), out / ALERTMANAGER_FILE,
              "Example Alertmanager config for featurewatch alerts (check: amtool check-config)."),
    ]
