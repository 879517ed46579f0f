"""The observability half of `featurewatch up`: Prometheus and Alertmanager configs written into
the run directory, a webhook receiver served in-process, and small Prometheus API queries."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from featurewatch.services.monitor.alerts import (
    ALERTMANAGER_FILE,
    RULES_FILE,
    AlertOptions,
    alertmanager_config,
    write_alerts,
)
from featurewatch.services.monitor.flags import read_flags_file

#: Scrape job names: the dashboards and the rendered alerts select on them.
MONITOR_JOB = "featurewatch-monitor"
INFERENCE_JOB = "featurewatch-inference"


def write_prometheus_config(run_dir: Path, flags_file: Path, flag_for: str, interval: str,
                            targets: dict[str, str], alertmanager: str | None,
                            webhook_url: str) -> Path:
    """Render the alert rules from the flags (as `featurewatch alerts render` does, with its
    example alertmanager.yml) and write prometheus.yml scraping `targets` (job → host:port) every `interval`."""
    alerts_dir = run_dir / "alerts"
    write_alerts(read_flags_file(flags_file), alerts_dir,
                 AlertOptions(flag_for=flag_for, monitor_job=MONITOR_JOB), webhook_url)
    config: dict[str, Any] = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(alerts_dir / RULES_FILE)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [target]}]}
                           for job, target in targets.items()],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [
            {"targets": [alertmanager]}]}]}
    path = run_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def write_alertmanager_config(run_dir: Path, webhook_urls: list[str]) -> Path:
    """The rendered example config, with demo timings (alerts delivered within a second or two,
    not after the production group_wait) and every webhook as a receiver."""
    config = alertmanager_config(webhook_urls[0])
    route = config["route"]
    route.update(group_wait="1s", group_interval="5s", repeat_interval="1h")
    for receiver in config["receivers"]:
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True}
                                       for url in webhook_urls]
    path = run_dir / ALERTMANAGER_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# ---- webhook receiver ------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    """One Alertmanager webhook POST and when it arrived (time.time())."""

    received_at: float
    payload: dict

    def alerts(self, alertname: str | None = None) -> list[dict]:
        return [a for a in self.payload.get("alerts", [])
                if alertname is None or a.get("labels", {}).get("alertname") == alertname]


class WebhookReceiver:
    """An HTTP server on a loopback port that records Alertmanager webhook deliveries."""

    def __init__(self, port: int = 0, path: str = "/alerts") -> None:
        deliveries: queue.Queue[Delivery] = queue.Queue()
        self.deliveries = deliveries
        self.path = path

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    deliveries.put(Delivery(time.time(), json.loads(body)))
                    self.send_response(200)
                except json.JSONDecodeError:
                    self.send_response(400)
                self.end_headers()

            def log_message(self, *args) -> None:  # keep the terminal for the summary
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="webhook")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.path}"

    def start(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def next(self, timeout: float) -> Delivery | None:
        """The next delivery, or None after `timeout` seconds."""
        try:
            return self.deliveries.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None


# ---- Prometheus API ----------------------------------------------------------------------------
def prometheus_api(base_url: str, path: str, **params: str) -> dict:
    """GET /api/v1/<path>; an HTTP error's JSON body is returned as is (it holds the error)."""
    url = f"{base_url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        return json.load(exc)


def wait_targets_up(base_url: str, jobs: list[str], timeout: float) -> None:
    """Block until Prometheus has scraped every job successfully at least once."""
    deadline = time.monotonic() + timeout
    while True:
        active = prometheus_api(base_url, "targets", state="active")["data"]["activeTargets"]
        healthy = {t["labels"]["job"] for t in active if t["health"] == "up"}
        if set(jobs) <= healthy:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus has not scraped {sorted(set(jobs) - healthy)} "
                               f"after {timeout:.0f}s")
        time.sleep(0.25)


def firing_alerts(base_url: str, alertname: str) -> list[dict]:
    """Alerts named `alertname` that Prometheus fires now."""
    alerts = prometheus_api(base_url, "alerts")["data"]["alerts"]
    return [a for a in alerts
            if a["state"] == "firing" and a["labels"].get("alertname") == alertname]


def flag_window_hits(metrics_url: str) -> dict[tuple[str, int], float]:
    """(dictionary, feature) → hits in the monitor window, from the monitor's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(s.labels["dictionary"], int(s.labels["feature"])): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "featurewatch_monitor_flagged_feature_window_hits"
            for s in family.samples}
