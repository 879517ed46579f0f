"""Helpers for tests that run an inference server (integration and e2e suites)."""

from __future__ import annotations

import asyncio
import time

import pytest

from featurewatch.services.inference.config import InferenceConfig


def tiny_config(tiny, **overrides) -> InferenceConfig:
    """A config serving the tiny model (fixtures_model) with both dictionaries on free ports."""
    fields = {"model": str(tiny.model_dir),
              "dictionaries": (str(tiny.mlp_bundle), str(tiny.resid_bundle)),
              "host": "127.0.0.1", "port": 0, "metrics_port": 0, "redis_url": "",
              "torch_threads": 1, "max_new_tokens": 2000, "grace_s": 0.5}
    fields.update(overrides)
    return InferenceConfig(**fields)


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll `predicate()` until true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def metric(server, name: str, **labels) -> float:
    """Current value of one sample of the server's registry (0 when absent)."""
    value = server.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
