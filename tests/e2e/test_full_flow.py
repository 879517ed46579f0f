"""The whole system on loopback, driven by `featurewatch up` itself on the tiny artifacts.

Real redis-server, inference and monitor services, prometheus and alertmanager: `up` flags a
feature that its demo prompts fire (the target) and one they never fire (the control), sends
the prompts, and stays up. The tests then check, against the live servers, that Prometheus
fires the target's alert and Alertmanager delivers it to this test's webhook, that the control
stays silent, that every dashboard query answers with data, and that SIGINT stops everything.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dashboard_build import load_build
from servers import wait_until

from featurewatch.services.monitor.alerts import FLAG_ALERT as ALERT
from featurewatch.stack import featurewatch_argv, find_binary, port_is_free
from featurewatch.up_demo import Profile, choose_control, choose_target
from featurewatch.up_observe import WebhookReceiver, prometheus_api

# The first test to use the session fixture pays for the tiny training (slow on a busy host).
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1800)]
ANY_PORT = [arg for name in ("redis", "grpc", "inference-metrics", "monitor", "monitor-metrics",
                             "prometheus", "alertmanager") for arg in (f"--{name}-port", "0")]


class Webhook(WebhookReceiver):
    """This test's own Alertmanager webhook receiver: every POSTed payload, in order."""

    def __init__(self) -> None:
        super().__init__(path="/hook")
        self.payloads: list[dict] = []
        self.start()

    def alerts(self) -> list[dict]:
        while (delivery := self.next(0)) is not None:
            self.payloads.append(delivery.payload)
        return [a for p in self.payloads for a in p["alerts"]]


def read_state(run_dir: Path) -> dict:
    path = run_dir / "up.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def prometheus(state: dict, path: str, **params) -> dict:
    return prometheus_api(state["prometheus"], path, **params)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain `text` (the run directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Up:
    proc: subprocess.Popen
    run_dir: Path
    log: Path
    state: dict
    webhook: Webhook

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def flag(self, role: int) -> dict:
        return self.state["flags"][role]


@pytest.fixture(scope="module")
def up(tiny_training, tmp_path_factory) -> Iterator[Up]:
    for binary in ("redis-server", "prometheus", "alertmanager"):
        if find_binary(binary) is None:  # the Debian name of alertmanager is found too
            pytest.fail(f"{binary} is not installed: run .ci/run (or apt-get install it)")
    run_dir = tmp_path_factory.mktemp("up") / "run"
    log = run_dir.parent / "up.log"
    webhook = Webhook()
    # Relative paths, as `make up` passes them: every config `up` writes must still work.
    cwd = tiny_training.artifacts.parent
    argv = featurewatch_argv(
        "up", "--artifacts", tiny_training.artifacts.name, "--preset", "tiny",
        "--run-dir", os.path.relpath(run_dir, cwd), *ANY_PORT, "--webhook-url", webhook.url,
        "--alert-for", "2s", "--scrape-interval", "1s", "--window", "300", "--timeout", "180")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, "COLUMNS": "200"})
    try:
        wait_until(lambda: proc.poll() is not None
                   or read_state(run_dir).get("phase") in ("alerted", "no-alert"),
                   600, "featurewatch up never finished its demo")
        assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
        yield Up(proc, run_dir, log, read_state(run_dir), webhook)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        webhook.stop()


def test_up_help_lists_its_options() -> None:
    result = subprocess.run(featurewatch_argv("up", "--help"), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for option in ("--artifacts", "--preset", "--run-dir", "--redis-port", "--grpc-port",
                   "--prometheus-port", "--webhook-url", "--alert-for", "--exit-after-demo",
                   "--timeout", "--no-prometheus", "Ctrl-C"):
        assert option in result.stdout, option


def test_up_does_not_import_torch() -> None:
    code = ("import sys, featurewatch.up, featurewatch.up_demo, featurewatch.up_observe, "
            "featurewatch.up_stack; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


def test_flag_choice_on_a_constructed_profile() -> None:
    # Features 1 and 3 fire on every demo request; at half its weakest demo activation, 3 also
    # hits a prose prompt and 1 hits nothing else. 4 and 5 never fire on the demo traffic and
    # fire on all prompts of their family; 5 is the stronger.
    prof = Profile(demo=[{1: 2.0, 2: 0.5, 3: 1.0}, {1: 1.0, 3: 1.0}, {1: 1.5, 3: 0.9}],
                   others={"prose": [{3: 1.0, 4: 2.0}, {4: 1.0}], "lang": [{1: 0.4, 5: 3.0}]})
    labels = {1: "def", 5: "ar"}
    target = choose_target(prof, "d", "code", labels)
    assert (target.feature, target.min_activation, target.severity) == (1, 0.5, "critical")
    assert target.fired_in == "3/3 code requests, 0/3 other prompts"
    assert target.name == "code (#1: def)"
    control = choose_control(prof, "d", labels, exclude=target.feature)
    assert (control.feature, control.family, control.min_activation) == (5, "lang", 1.5)
    assert control.fired_in == "1/1 lang prompts, 0/3 demo requests"
    assert choose_control(Profile(demo=[{1: 1.0}], others={"x": [{1: 2.0}]}), "d", {}, 1) is None


def test_foreign_run_dir_and_unknown_dictionary_are_refused(tiny_training, tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not made by featurewatch up")
    base = ["up", "--artifacts", str(tiny_training.artifacts), *ANY_PORT]
    result = subprocess.run(featurewatch_argv(*base, "--run-dir", str(foreign)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"--run-dir {foreign} is not empty" in result.stderr
    assert (foreign / "notes.txt").is_file()
    result = subprocess.run(featurewatch_argv(*base, "--run-dir", str(tmp_path / "run"),
                                              "--dictionary", "nope"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "--dictionary 'nope' is not among the bundles ['tiny-1k']" in result.stderr


def test_busy_port_is_a_clear_error_and_leaves_nothing_running(tiny_training, tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            featurewatch_argv("up", "--artifacts", str(tiny_training.artifacts), "--run-dir",
                              str(tmp_path / "run"), *ANY_PORT, "--redis-port", str(port)),
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"error: redis-server: port {port} on 127.0.0.1 is already in use" in result.stderr
    assert processes_mentioning(str(tmp_path / "run")) == []


def test_flagged_feature_alert_fires_and_reaches_the_webhook(up: Up) -> None:
    assert up.state["phase"] == "alerted", up.output()
    target = up.flag(0)
    assert target["severity"] == "critical" and target["family"] == "Python code"
    assert all(o["target_activation"] >= target["min_activation"]
               for o in up.state["demo"]["outputs"]), up.state["demo"]
    firing = [a for a in prometheus(up.state, "alerts")["data"]["alerts"]
              if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]
    assert [(a["labels"]["dictionary"], a["labels"]["feature"]) for a in firing] == [
        ("tiny-1k", str(target["feature"]))]
    delivered = wait_until(lambda: [a for a in up.webhook.alerts()
                                    if a["labels"].get("alertname") == ALERT], 60,
                           "Alertmanager never delivered the alert to the test's webhook")
    alert = delivered[0]
    assert alert["status"] == "firing"
    assert alert["labels"]["feature"] == str(target["feature"])
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["name"] == target["name"]
    assert f"feature {target['feature']}" in alert["annotations"]["summary"]
    assert up.state["alert"]["alert"]["labels"] == alert["labels"]  # up's own receiver too
    latency = up.state["alert"]["latency_from_first_prompt_s"]
    assert 0 < latency < 180
    print(f"alert delivered {latency:.1f} s after the first demo prompt, "
          f"{up.state['alert']['latency_from_last_prompt_s']:.1f} s after the last")


def test_control_feature_never_fired_and_never_alerted(up: Up) -> None:
    target, control = up.flag(0), up.flag(1)
    assert control["feature"] != target["feature"] and control["family"] != "Python code"

    def value(metric: str, feature: int) -> float:
        result = prometheus(up.state, "query", query=f'max({metric}{{feature="{feature}"}})')
        return float(result["data"]["result"][0]["value"][1])

    hits = "featurewatch_monitor_flagged_feature_window_hits"
    fires = "featurewatch_monitor_flagged_feature_fires_total"
    assert value(hits, target["feature"]) >= len(up.state["demo"]["outputs"])
    assert value(fires, target["feature"]) > 0
    assert value(hits, control["feature"]) == 0
    assert value(fires, control["feature"]) == 0  # on no token of the demo traffic
    time.sleep(3)  # more evaluations than the 2s `for`: still no alert, not even pending
    alerts = prometheus(up.state, "alerts")["data"]["alerts"]
    assert not [a for a in alerts if a["labels"].get("feature") == str(control["feature"])]
    assert not [a for a in up.webhook.alerts()
                if a["labels"].get("feature") == str(control["feature"])]


def test_every_dashboard_query_returns_data(up: Up) -> None:
    queries = load_build().panel_queries(dictionary=".*", rate_interval="1m")
    assert len(queries) >= 15
    for title, expr in queries:
        reply = prometheus(up.state, "query", query=expr)
        assert reply["status"] == "success", (title, expr, reply)
        assert reply["data"]["result"], (title, expr)


def test_sigint_stops_every_process(up: Up) -> None:
    pids = up.state["pids"]
    assert set(pids) == {"redis-server", "inference", "monitor", "prometheus", "alertmanager"}
    ports = up.state["ports"]
    up.proc.send_signal(signal.SIGINT)
    assert up.proc.wait(90) == 0, up.output()
    assert read_state(up.run_dir)["phase"] == "stopped"
    assert [name for name, pid in pids.items() if pid_alive(pid)] == []
    assert processes_mentioning(str(up.run_dir)) == []
    assert [name for name, port in ports.items() if not port_is_free(port)] == []
    assert "stopped" in up.output()


def test_exit_after_demo_without_prometheus(tiny_training, tmp_path) -> None:
    run_dir = tmp_path / "run"
    result = subprocess.run(
        featurewatch_argv("up", "--artifacts", str(tiny_training.artifacts), "--run-dir",
                          str(run_dir), *ANY_PORT, "--no-prometheus", "--exit-after-demo"),
        capture_output=True, text=True, timeout=600, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = read_state(run_dir)
    assert state["phase"] == "stopped" and state["prometheus"] is None and state["alert"] is None
    assert set(state["pids"]) == {"redis-server", "inference", "monitor"}
    assert [name for name, pid in state["pids"].items() if pid_alive(pid)] == []
    assert "not running" in result.stdout
    assert state["hits"] == len(state["demo"]["outputs"])  # counted by the monitor
    target = state["flags"][0]
    assert f"{target['feature']} " in result.stdout and "file://" in result.stdout
