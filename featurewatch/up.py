"""`featurewatch up`: the whole system on one machine, with a demo that makes an alert fire.

Trains the artifacts when they are missing, starts redis-server, the inference and monitor
services (and Prometheus + Alertmanager when installed) on loopback ports, flags a feature that
the demo prompts fire, sends the prompts, and prints where to look and the alert as delivered.
Ctrl-C (or SIGTERM) stops every process it started. No torch here: the model is reached over
gRPC only.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import grpc
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from featurewatch import up_demo
from featurewatch.services.monitor.alerts import FLAG_ALERT as ALERT
from featurewatch.stack import Stack, find_binary
from featurewatch.up_observe import (
    INFERENCE_JOB,
    MONITOR_JOB,
    Delivery,
    WebhookReceiver,
    firing_alerts,
    flag_window_hits,
    wait_targets_up,
    write_alertmanager_config,
    write_prometheus_config,
)
from featurewatch.up_stack import (
    ArtifactSet,
    Bundle,
    Ports,
    ensure_artifacts,
    prepare_run_dir,
    start_alertmanager,
    start_core,
    start_prometheus,
    write_state,
)

PRESETS = ("tiny", "default", "paper")


@dataclass(frozen=True)
class UpOptions:
    """The command line of `featurewatch up`."""

    artifacts: Path
    preset: str
    run_dir: Path | None
    dictionary: str | None
    demo_family: str
    ports: dict[str, int]
    webhook_urls: tuple[str, ...]
    alert_for: str
    scrape_interval: str
    window_s: int
    max_new_tokens: int
    no_prometheus: bool
    exit_after_demo: bool
    timeout: float


@dataclass
class Run:
    """State of one `up` run, mirrored into <run-dir>/up.json."""

    opts: UpOptions
    run_dir: Path
    ports: Ports
    stack: Stack = field(default_factory=Stack)
    state: dict = field(default_factory=dict)
    fit: up_demo.PromptFitter | None = None

    def save(self, **changes) -> None:
        self.state.update(changes)
        # Kept after the stop too, so a caller can check that every one of them is gone.
        self.state.setdefault("pids", {}).update(
            {p.name: p.proc.pid for p in self.stack.processes if p.proc})
        write_state(self.run_dir, self.state)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def _start_observability(run: Run, flags_file: Path, hook: WebhookReceiver,
                         console: Console) -> tuple[str | None, str | None]:
    """Prometheus (+ Alertmanager) when installed and wanted; their URLs (None when absent)."""
    if run.opts.no_prometheus:
        return None, None
    missing = [name for name in ("prometheus", "alertmanager") if find_binary(name) is None]
    for name in missing:
        console.print(f"[yellow]{name} is not installed[/] (apt-get install "
                      f"{'prometheus-alertmanager' if name == 'alertmanager' else name}): "
                      "continuing without it")
    if "prometheus" in missing:
        return None, None
    p = run.ports
    am_url = None
    if "alertmanager" not in missing:
        am_config = write_alertmanager_config(run.run_dir, [hook.url, *run.opts.webhook_urls])
        start_alertmanager(run.stack, run.run_dir, am_config, p.alertmanager)
        am_url = f"http://127.0.0.1:{p.alertmanager}"
    targets = {MONITOR_JOB: f"127.0.0.1:{p.monitor_metrics}",
               INFERENCE_JOB: f"127.0.0.1:{p.inference_metrics}"}
    config = write_prometheus_config(run.run_dir, flags_file, run.opts.alert_for,
                                     run.opts.scrape_interval, targets,
                                     am_url and f"127.0.0.1:{p.alertmanager}", hook.url)
    start_prometheus(run.stack, run.run_dir, config, p.prometheus)
    prom_url = f"http://127.0.0.1:{p.prometheus}"
    wait_targets_up(prom_url, list(targets), timeout=60)
    return prom_url, am_url


def _choose_flags(run: Run, arts: ArtifactSet, bundle: Bundle,
                  console: Console) -> list[up_demo.FlagChoice]:
    """Profile the demo prompts through the inference service, pick target and control."""
    labels = up_demo.read_labels(bundle.path)
    with console.status("profiling the demo prompts (Generate + Trace)"), \
            grpc.insecure_channel(f"127.0.0.1:{run.ports.grpc}") as channel:
        run.fit = up_demo.PromptFitter(arts.model, channel)
        prof = up_demo.profile(channel, bundle.dictionary_id, run.opts.demo_family,
                               run.opts.max_new_tokens, run.fit)
    target = up_demo.choose_target(prof, bundle.dictionary_id, run.opts.demo_family, labels)
    control = up_demo.choose_control(prof, bundle.dictionary_id, labels, target.feature)
    choices = [target, *([control] if control else [])]
    flags_file = run.run_dir / "flags.yaml"
    flags_file.write_text(yaml.safe_dump({"flags": [c.as_yaml() for c in choices]},
                                         sort_keys=False, allow_unicode=True), encoding="utf-8")
    up_demo.upsert_flags(f"127.0.0.1:{run.ports.monitor}", choices)
    return choices


def _matches(delivery: Delivery, feature: int) -> list[dict]:
    return [a for a in delivery.alerts(ALERT)
            if a["labels"].get("feature") == str(feature) and a.get("status") == "firing"]


def _wait_alert(run: Run, hook: WebhookReceiver, prom_url: str | None, am_url: str | None,
                target: up_demo.FlagChoice) -> dict | None:
    """The target's alert: as delivered to the webhook (with Alertmanager), else as Prometheus
    fires it; None after --timeout."""
    deadline = time.monotonic() + run.opts.timeout
    while time.monotonic() < deadline:
        if am_url:
            delivery = hook.next(deadline - time.monotonic())
            if delivery is None:
                break
            run.state.setdefault("deliveries", []).append(delivery.payload)
            if alerts := _matches(delivery, target.feature):
                return {"received_at": delivery.received_at, "via": "alertmanager webhook",
                        "alert": alerts[0], "receiver": delivery.payload.get("receiver")}
            continue
        alerts = [a for a in firing_alerts(prom_url, ALERT)
                  if a["labels"].get("feature") == str(target.feature)]
        if alerts:
            return {"received_at": time.time(), "via": "prometheus", "alert": alerts[0]}
        time.sleep(0.5)
    return None


def _wait_hits(run: Run, target: up_demo.FlagChoice, expected: int) -> float:
    """The target's hits in the monitor window once the monitor has counted the demo's
    `expected` hitting requests (or --timeout passed)."""
    url = f"http://127.0.0.1:{run.ports.monitor_metrics}/metrics"
    deadline = time.monotonic() + run.opts.timeout
    key = (target.dictionary_id, target.feature)
    while (hits := flag_window_hits(url).get(key, 0)) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return hits


def _demo(run: Run, choices: list[up_demo.FlagChoice], hook: WebhookReceiver,
          prom_url: str | None, am_url: str | None, console: Console) -> dict | None:
    target = choices[0]
    started = time.time()
    with console.status(f"sending the {run.opts.demo_family} demo prompts"), \
            grpc.insecure_channel(f"127.0.0.1:{run.ports.grpc}") as channel:
        gens = up_demo.send_demo(channel, target.dictionary_id, run.opts.demo_family,
                                 run.opts.max_new_tokens, run.fit)
    sent = time.time()
    outputs = [{"text": g.text, "generated_tokens": g.generated_tokens,
                "target_activation": g.maxima.get(target.feature, 0.0)} for g in gens]
    run.save(phase="demo-sent", alert=None,
             demo={"started_at": started, "sent_at": sent, "outputs": outputs})
    if prom_url is None:  # no alerting: show that the monitor counted the hits instead
        expected = sum(g.maxima.get(target.feature, 0.0) >= target.min_activation for g in gens)
        run.save(phase="counted", hits=_wait_hits(run, target, expected))
        return None
    with console.status(f"waiting for {ALERT} on feature {target.feature} "
                        f"(for: {run.opts.alert_for}, timeout {run.opts.timeout:g}s)"):
        alert = _wait_alert(run, hook, prom_url, am_url, target)
    if alert is not None:
        alert.update(latency_from_first_prompt_s=alert["received_at"] - started,
                     latency_from_last_prompt_s=alert["received_at"] - sent)
    run.save(phase="alerted" if alert else "no-alert", alert=alert)
    return alert


def _summary(run: Run, bundle: Bundle, choices, prom_url, am_url, alert,
             console: Console) -> None:
    p = run.ports
    where = Table(title="featurewatch is up", show_header=False)
    where.add_column(no_wrap=True)
    where.add_column(overflow="fold")
    rows = [("inference gRPC", f"127.0.0.1:{p.grpc}  (featurewatch generate \"…\" "
                               f"--server 127.0.0.1:{p.grpc})"),
            ("inference metrics", f"http://127.0.0.1:{p.inference_metrics}/metrics"),
            ("monitor gRPC", f"127.0.0.1:{p.monitor}"),
            ("monitor metrics", f"http://127.0.0.1:{p.monitor_metrics}/metrics"),
            ("redis", f"redis://127.0.0.1:{p.redis}/0"),
            ("Prometheus", f"{prom_url}/alerts" if prom_url else "not running"),
            ("Alertmanager", am_url or "not running"),
            ("feature browser", bundle.browser.resolve().as_uri()),
            ("flags / logs", f"{run.run_dir / 'flags.yaml'}  /  {run.run_dir / 'logs'}")]
    for name, value in rows:
        where.add_row(name, value)
    console.print(where)
    hits = flag_window_hits(f"http://127.0.0.1:{p.monitor_metrics}/metrics")
    flags = Table(title=f"flagged features of {bundle.dictionary_id}")
    for column in ("feature", "name", "severity", "min_activation", "profiled: fires on",
                   f"hits in the last {run.opts.window_s}s"):
        flags.add_column(column)
    for c in choices:
        flags.add_row(str(c.feature), escape(c.name), c.severity, f"{c.min_activation:.3g}",
                      c.fired_in, f"{hits.get((c.dictionary_id, c.feature), 0):g}")
    console.print(flags)
    if alert is not None:
        a = alert["alert"]
        console.print(f"[bold red]ALERT[/] {a['labels'].get('alertname')} delivered via "
                      f"{alert['via']} {alert['latency_from_first_prompt_s']:.1f} s after the "
                      "first demo prompt:")
        for key in ("labels", "annotations"):
            for name, value in a.get(key, {}).items():
                console.print(f"  {name}: {value}", markup=False, highlight=False)
    elif prom_url:
        console.print(f"[yellow]no {ALERT} within {run.opts.timeout:g}s[/]: see "
                      f"{prom_url}/alerts and {run.run_dir / 'logs'}")


def _stay_up(run: Run, hook: WebhookReceiver, console: Console) -> None:
    """Print further deliveries (e.g. resolved) until Ctrl-C; stop if a child process dies."""
    console.print("[green]up[/] — Ctrl-C stops everything")
    while True:
        delivery = hook.next(1.0)
        if delivery is not None:
            for a in delivery.alerts():
                console.print(f"alert {a['labels'].get('alertname')} "
                              f"feature={a['labels'].get('feature', '-')}: {a.get('status')}",
                              markup=False)
        for process in run.stack.processes:
            if process.proc is not None and process.proc.poll() is not None:
                raise click.ClickException(f"{process.name} exited with status "
                                           f"{process.proc.returncode} (log: {process.log_path})")


def run_up(opts: UpOptions, console: Console) -> None:
    """Train if needed, start everything, run the demo; stop everything on the way out."""
    arts = ensure_artifacts(opts.artifacts, opts.preset, console.print)
    bundle = arts.bundle(opts.dictionary)  # an unknown --dictionary fails before anything starts
    run = Run(opts, prepare_run_dir(opts.run_dir or opts.artifacts / "up"),
              Ports.resolve(**opts.ports))
    hook = WebhookReceiver(run.ports.webhook).start()
    try:
        with console.status("starting redis-server, inference (loads the model), monitor"):
            start_core(run.stack, run.run_dir, arts, run.ports, opts.window_s)
            up_demo.wait_serving(f"127.0.0.1:{run.ports.grpc}", timeout=300)
        run.save(phase="started", ports=vars(run.ports), webhook=hook.url)
        choices = _choose_flags(run, arts, bundle, console)
        prom_url, am_url = _start_observability(run, run.run_dir / "flags.yaml", hook, console)
        run.save(phase="observing", prometheus=prom_url, alertmanager=am_url,
                 browser=bundle.browser.resolve().as_uri(),
                 flags=[vars(c) for c in choices])
        alert = _demo(run, choices, hook, prom_url, am_url, console)
        _summary(run, bundle, choices, prom_url, am_url, alert, console)
        if opts.exit_after_demo:
            if prom_url and alert is None:
                raise click.ClickException(f"no {ALERT} alert within {opts.timeout:g}s")
            return
        _stay_up(run, hook, console)
    except KeyboardInterrupt:
        console.print("interrupted")
    except (RuntimeError, TimeoutError, grpc.RpcError) as exc:
        text = f"{exc.code().name}: {exc.details()}" if isinstance(exc, grpc.RpcError) else exc
        raise click.ClickException(f"{text} (logs: {run.run_dir / 'logs'})") from None
    finally:
        # A second Ctrl-C must not cut the shutdown short and leave orphans behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping " + ", ".join(p.name for p in reversed(run.stack.processes)))
        run.stack.stop()
        hook.stop()
        run.save(phase="stopped")
        console.print("stopped")


def _port(name: str, default: int, what: str):
    return click.option(f"--{name}", type=click.IntRange(0, 65535), default=default,
                        show_default=True, help=f"Loopback port of {what} (0 = any free port).")


@click.command("up")
@click.option("--artifacts", type=click.Path(file_okay=False, path_type=Path),
              default="artifacts", show_default=True, envvar="FEATUREWATCH_ARTIFACTS",
              help="Artifacts of the training job; trained here when incomplete.")
@click.option("--preset", type=click.Choice(PRESETS), default="default", show_default=True,
              help="Training preset used when the artifacts are missing.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Logs, configs, Redis and Prometheus data of this run, wiped at start "
                   "[default: ARTIFACTS/up].")
@click.option("--dictionary", help="Dictionary whose features are flagged [default: largest].")
@click.option("--demo-family", type=click.Choice(sorted(up_demo.FAMILIES)),
              default=up_demo.DEMO_FAMILY, show_default=True,
              help="Prompt family of the demo traffic (the flagged feature fires on it).")
@_port("redis-port", 6380, "redis-server")
@_port("grpc-port", 50051, "the inference gRPC API")
@_port("inference-metrics-port", 9464, "the inference /metrics")
@_port("monitor-port", 50052, "the monitor gRPC API")
@_port("monitor-metrics-port", 9465, "the monitor /metrics")
@_port("prometheus-port", 9090, "Prometheus")
@_port("alertmanager-port", 9093, "Alertmanager")
@_port("webhook-port", 0, "the webhook receiver that prints delivered alerts")
@click.option("--webhook-url", "webhook_urls", multiple=True,
              help="Also deliver alerts to this webhook (repeatable).")
@click.option("--alert-for", default="5s", show_default=True,
              help="How long a flagged feature must keep hitting before it alerts.")
@click.option("--scrape-interval", default="1s", show_default=True,
              help="Prometheus scrape and rule evaluation interval.")
@click.option("--window", "window_s", type=click.IntRange(5, 900), default=60,
              show_default=True, help="Monitor window (s) of rates, drift and flag hits.")
@click.option("--max-new-tokens", type=click.IntRange(1, 256), default=24, show_default=True,
              help="Tokens generated per demo prompt.")
@click.option("--no-prometheus", is_flag=True,
              help="Do not start Prometheus and Alertmanager even when installed.")
@click.option("--exit-after-demo", is_flag=True,
              help="Stop everything after the summary (exit 1 when no alert fired).")
@click.option("--timeout", type=click.FloatRange(1), default=180.0, show_default=True,
              help="Seconds to wait for the flagged feature's alert.")
def up(artifacts, preset, run_dir, dictionary, demo_family, webhook_urls, alert_for,
       scrape_interval, window_s, max_new_tokens, no_prometheus, exit_after_demo, timeout,
       **ports) -> None:
    """Run featurewatch locally: train if needed, start Redis, the inference and monitor
    services, Prometheus and Alertmanager (when installed), flag a feature, send demo
    prompts, and print the addresses and the alert that fired. Ctrl-C stops everything.

    Two features are flagged: one that fires on the demo prompts (it alerts) and a control
    that fires on another prompt family but not on the demo traffic (it stays silent).
    Addresses, flags and the delivered alert are also written to RUN_DIR/up.json.
    """
    # Explicit: a shell starting `up` in the background would have SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Absolute: Prometheus resolves rule_files against its config file's folder, not our cwd.
    opts = UpOptions(artifacts.resolve(), preset, run_dir and run_dir.resolve(), dictionary,
                     demo_family,
                     {k.removesuffix("_port"): v for k, v in ports.items()}, webhook_urls,
                     alert_for, scrape_interval, window_s, max_new_tokens, no_prometheus,
                     exit_after_demo, timeout)
    run_up(opts, Console())
