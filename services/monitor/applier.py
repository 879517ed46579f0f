"""Loads apply.lua and calls it with one batch of decoded stream entries.

Every key the script touches is passed in KEYS (bucket hashes and idempotency keys included)
and carries the dictionary's hash tag, so the script runs unchanged on Redis Cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from importlib import resources

import numpy as np
import redis

from featurewatch.contracts import trace_stream_key
from featurewatch.services.monitor.aggregates import (
    BucketLayout,
    bucket_key,
    dead_letter_key,
    max_key,
    seen_key,
    totals_key,
)
from featurewatch.services.monitor.flags import flag_min_key


@dataclass(frozen=True)
class GoodEvent:
    """A valid trace event, ready to count."""

    entry_id: str
    event_key: str
    """Idempotency key: request_id and chunk_index."""
    bucket: int | None
    """Time bucket index, or None when the bucket has already expired (late event)."""
    tokens: int
    ids: np.ndarray
    """Feature ids, little-endian uint32."""
    counts: np.ndarray
    """Fire counts, little-endian uint32."""
    maxes: np.ndarray
    """Max activations, little-endian float32."""


@dataclass(frozen=True)
class BadEvent:
    """A stream entry that cannot be counted; it goes to the dead-letter stream."""

    entry_id: str
    reason: str
    payload: bytes


@dataclass
class Batch:
    """Decoded entries of one read, applied together."""

    good: list[GoodEvent] = field(default_factory=list)
    bad: list[BadEvent] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    """Entries deleted from the stream before they were processed (only acknowledged)."""

    def __len__(self) -> int:
        return len(self.good) + len(self.bad) + len(self.gone)


@dataclass
class ApplyResult:
    """What one or more script calls did."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    increments: int = 0
    deleted: int = 0

    def __iadd__(self, other: ApplyResult) -> ApplyResult:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    @property
    def entries(self) -> int:
        return self.applied + self.duplicates + self.dead_lettered + self.deleted


def script_source() -> str:
    """The text of apply.lua (package data)."""
    return resources.files(__package__).joinpath("apply.lua").read_text(encoding="utf-8")


class Applier:
    """Calls apply.lua (EVALSHA, loading it again after a Redis restart)."""

    def __init__(self, client: redis.Redis, layout: BucketLayout, *, group: str,
                 consumer: str, dedup_ttl_s: int, dead_letter_maxlen: int) -> None:
        self.client = client
        self.layout = layout
        self.group = group
        self.consumer = consumer
        self.dedup_ms = dedup_ttl_s * 1000
        self.dead_letter_maxlen = dead_letter_maxlen
        self.script = client.register_script(script_source())

    def apply(self, dictionary_id: str, batch: Batch, now: float) -> ApplyResult:
        """Apply and acknowledge `batch` atomically; `now` sets the buckets' expiry."""
        if not len(batch):
            return ApplyResult()
        keys, args = self.encode(dictionary_id, batch, now)
        applied, dups, dead, increments, deleted = self.script(keys=keys, args=args)
        return ApplyResult(applied, dups, dead, increments, deleted)

    def encode(self, dictionary_id: str, batch: Batch, now: float) -> tuple[list, list]:
        """KEYS and ARGV of the script for one batch."""
        numbers: dict[int, int] = {}
        for event in batch.good:
            if event.bucket is not None and event.bucket not in numbers:
                numbers[event.bucket] = len(numbers) + 1
        # Feature arrays travel as one binary blob (ids, counts, maxes per event) that the
        # script reads with struct.unpack: JSON-encoding floats would cost more than the
        # whole script.
        ok = [[e.entry_id, numbers.get(e.bucket, 0), e.tokens, len(e.ids)] for e in batch.good]
        blob = b"".join(part for e in batch.good
                        for part in (e.ids.tobytes(), e.counts.tobytes(), e.maxes.tobytes()))
        doc = {
            "ttl": [max(self.layout.ttl_ms(index, now), 1) for index in numbers],
            "dedup_ms": self.dedup_ms, "dl_maxlen": self.dead_letter_maxlen,
            "consumer": self.consumer, "ok": ok,
            "bad": [[b.entry_id, b.reason] for b in batch.bad], "gone": batch.gone,
        }
        keys = [trace_stream_key(dictionary_id), totals_key(dictionary_id),
                max_key(dictionary_id), flag_min_key(dictionary_id),
                dead_letter_key(dictionary_id)]
        keys += [bucket_key(dictionary_id, index) for index in numbers]
        keys += [seen_key(dictionary_id, e.event_key) for e in batch.good]
        keys += [seen_key(dictionary_id, f"deadletter:{b.entry_id}") for b in batch.bad]
        args = [self.group, len(numbers), json.dumps(doc, separators=(",", ":")), blob]
        args += [b.payload for b in batch.bad]
        return keys, args
