"""Test helpers for the monitor: TraceEvent payloads, publishing, torch-free bundle dirs.

The monitor owns no inference code, so tests publish TraceEvents on the stream directly,
exactly as the inference service's publisher does (XADD of the serialized message).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featurewatch.contracts import DICTIONARIES_KEY, TRACE_FIELD, trace_stream_key
from featurewatch.v1 import trace_pb2


def trace_event(request_id: str, features: dict[int, tuple[int, float]], *,
                dictionary_id: str = "d1", tokens: int = 10, d_sae: int = 100,
                t: float | None = None, chunk: int = 0) -> trace_pb2.TraceEvent:
    """A TraceEvent; `features` maps feature id → (fire count, max activation)."""
    ids = sorted(features)
    event = trace_pb2.TraceEvent(
        request_id=request_id, dictionary_id=dictionary_id, token_count=tokens,
        feature_ids=ids, fire_counts=[features[i][0] for i in ids],
        max_activations=[features[i][1] for i in ids],
        sum_activations=[features[i][0] * features[i][1] for i in ids],
        chunk_index=chunk, final_chunk=True, model_id="test-model", d_sae=d_sae)
    event.time.FromNanoseconds(int((time.time() if t is None else t) * 1e9))
    return event


def publish(client, payloads, dictionary_id: str = "d1") -> list[bytes]:
    """XADD each payload (TraceEvent or bytes) to the dictionary's stream; returns entry ids."""
    pipe = client.pipeline(transaction=False)
    pipe.sadd(DICTIONARIES_KEY, dictionary_id)
    for payload in payloads:
        data = payload.SerializeToString() if hasattr(payload, "SerializeToString") else payload
        pipe.xadd(trace_stream_key(dictionary_id), {TRACE_FIELD: data})
    return pipe.execute()[1:]


def write_bundle(path: Path, dictionary_id: str, d_sae: int,
                 density: list[float] | None = None) -> Path:
    """A bundle directory with what the monitor reads: cfg.json (+ metrics.json densities)."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"architecture": "standard", "d_in": 8, "d_sae": d_sae,
           "hook_name": "blocks.0.mlp.hook_post",
           "featurewatch": {"dictionary_id": dictionary_id, "model_id": "test-model",
                            "model_weights_sha256": "0" * 64,
                            "hook_point": "blocks.0.mlp.hook_post"}}
    (path / "cfg.json").write_text(json.dumps(cfg))
    if density is not None:
        (path / "metrics.json").write_text(json.dumps({"feature_density": density}))
    return path


@dataclass
class Expected:
    """What the aggregates must hold after a set of distinct events is ingested."""

    tokens: int = 0
    events: int = 0
    fires: Counter = field(default_factory=Counter)
    maxes: dict[int, float] = field(default_factory=dict)

    def add(self, event: trace_pb2.TraceEvent) -> None:
        self.tokens += event.token_count
        self.events += 1
        for f, c, m in zip(event.feature_ids, event.fire_counts, event.max_activations,
                           strict=True):
            self.fires[f] += c
            self.maxes[f] = max(self.maxes.get(f, 0.0), m)


def random_events(n: int, *, prefix: str, d_sae: int = 100, features: int = 20,
                  seed: int = 0, dictionary_id: str = "d1") -> list[trace_pb2.TraceEvent]:
    """n distinct events with random features, fire counts and float32 activations."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        ids = rng.choice(d_sae, size=features, replace=False)
        acts = rng.gamma(2.0, 1.0, size=features).astype(np.float32)
        counts = rng.integers(1, 11, size=features)
        events.append(trace_event(
            f"{prefix}-{i}", {int(f): (int(c), float(a)) for f, c, a in zip(ids, counts, acts,
                                                                            strict=True)},
            dictionary_id=dictionary_id, tokens=10, d_sae=d_sae))
    return events
