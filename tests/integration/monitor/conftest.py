"""Fixtures of the monitor integration tests: a Redis client and stream workers."""

from __future__ import annotations

import functools

import pytest
import redis
from monitor_workers import stream_worker


@pytest.fixture
def client(redis_server):
    c = redis.Redis.from_url(redis_server.url)
    yield c
    c.close()


@pytest.fixture
def make_worker(client):
    """make_worker(consumer, ...) → a StreamWorker of dictionary d1 (d_sae 100) in group g."""
    return functools.partial(stream_worker, client)
