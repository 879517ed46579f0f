"""Real servers for tests: testcontainers where a Docker engine runs, else local binaries.

Each server listens on a free loopback port and is stopped (and its files removed) after use.
Helpers here are shared by the integration and e2e suites through tests/conftest.py.
"""

from __future__ import annotations

import functools
import socket
import subprocess
import time
from pathlib import Path

import pytest

from featurewatch.stack import find_binary, free_port


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def require_binary(name: str) -> str:
    """The path of a server binary; fails the test (not skips) when it is not installed."""
    path = find_binary(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run .ci/run (or apt-get install it) first")
    return path


@functools.cache
def docker_available() -> bool:
    """True when a Docker engine answers (testcontainers can then be used); asked once."""
    try:
        import docker  # noqa: PLC0415

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


class RedisServer:
    """A redis-server on a loopback port that tests may stop and restart (same port, same data)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [require_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


class RedisContainer:
    """The same interface over testcontainers, used when a Docker engine exists."""

    def __init__(self) -> None:
        from testcontainers.redis import RedisContainer as _Container  # noqa: PLC0415

        self.container = _Container("redis:7")
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisContainer:
        self.container.start()
        self.port = int(self.container.get_exposed_port(6379))
        return self

    def stop(self) -> None:
        self.container.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.25):
    """Poll `predicate` every `interval` s until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} (after {timeout} s)")
        time.sleep(interval)
    return result
