"""Supervise the local processes of a featurewatch deployment on loopback ports.

Used by `featurewatch up` and by the end-to-end tests, so that both run the same real
servers (redis-server, the two services, prometheus, alertmanager) the same way.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from featurewatch.errors import ConfigError

SEARCH_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin")
BINARY_ALIASES = {"alertmanager": ("alertmanager", "prometheus-alertmanager")}


def find_binary(name: str) -> str | None:
    """Path of a server binary (Debian names included), or None when not installed."""
    for candidate in BINARY_ALIASES.get(name, (name,)):
        found = shutil.which(candidate) or next(
            (f"{d}/{candidate}" for d in SEARCH_DIRS if Path(d, candidate).exists()), None)
        if found:
            return found
    return None


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    """A loopback TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    """One child process with a readiness check (TCP port or HTTP URL) and a log file."""

    name: str
    argv: list[str]
    log_path: Path
    port: int
    ready_url: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, timeout: float = 120.0) -> None:
        if not port_is_free(self.port):
            raise ConfigError(f"{self.name}: port {self.port} on 127.0.0.1 is already in use")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # A new session so Ctrl-C in the terminal reaches only `up`, which stops children in order.
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if self._ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready on port {self.port} after {timeout:.0f}s "
                           f"(log: {self.log_path})")

    def _ready(self) -> bool:
        if self.ready_url is None:
            return not port_is_free(self.port)
        try:
            with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Stack:
    """Processes started in order and stopped in reverse, also on errors and Ctrl-C."""

    def __init__(self) -> None:
        self.processes: list[ManagedProcess] = []

    def start(self, process: ManagedProcess, timeout: float = 120.0) -> ManagedProcess:
        self.processes.append(process)
        process.start(timeout)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def featurewatch_argv(*args: str) -> list[str]:
    """Run the featurewatch CLI with this interpreter (works without the console script)."""
    return [sys.executable, "-c", "from featurewatch.cli import main; main()", *args]


def redis_process(workdir: Path, port: int) -> ManagedProcess:
    """redis-server with append-only persistence under `workdir`."""
    binary = find_binary("redis-server")
    if binary is None:
        raise ConfigError("redis-server is not installed (apt-get install redis-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--save", "", "--appendonly", "yes"]
    return ManagedProcess("redis-server", argv, workdir / "redis.log", port)


def prometheus_process(config: Path, workdir: Path, port: int) -> ManagedProcess:
    """prometheus with its TSDB under `workdir`, ready when /-/ready answers."""
    binary = find_binary("prometheus")
    if binary is None:
        raise ConfigError("prometheus is not installed (apt-get install prometheus)")
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]
    return ManagedProcess("prometheus", argv, workdir / "prometheus.log", port,
                          ready_url=f"http://127.0.0.1:{port}/-/ready")


def alertmanager_process(config: Path, workdir: Path, port: int) -> ManagedProcess:
    """alertmanager (no clustering) with its state under `workdir`."""
    binary = find_binary("alertmanager")
    if binary is None:
        raise ConfigError("alertmanager is not installed (apt-get install prometheus-alertmanager)")
    argv = [binary, f"--config.file={config}", f"--storage.path={workdir / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    return ManagedProcess("alertmanager", argv, workdir / "alertmanager.log", port,
                          ready_url=f"http://127.0.0.1:{port}/-/ready")
