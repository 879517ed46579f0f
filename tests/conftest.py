"""Shared fixtures: real servers on loopback ports (see tests/servers.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from servers import RedisContainer, RedisServer, docker_available  # noqa: E402


@pytest.fixture
def redis_server(tmp_path: Path):
    """A fresh real Redis for one test; `.stop()` / `.start()` simulate an outage."""
    server = RedisContainer() if docker_available() else RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
