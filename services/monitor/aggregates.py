"""The Redis layout of a dictionary's aggregates, and windowed queries over it.

Per dictionary (every key in the dictionary's hash slot, via `dictionary_key`):
- `bucket:<i>` hash for the time bucket i = floor(event time / bucket_s): field `<feature>` =
  tokens on which the feature fired, `_tokens` / `_events` = tokens / events observed,
  `h:<feature>` / `m:<feature>` = hits and max activation of flagged features. Each bucket
  expires retention_s after its end.
- `totals` hash (never expires): `tokens`, `events`, `duplicates`, `dead_lettered`, `deleted`,
  `late`, and `fires:<feature>` / `hits:<feature>` of flagged features.
- `max` hash: the largest activation ever ingested per feature.
- `seen:<request_id>:<chunk_index>`: idempotency keys; `deadletter`: the dead-letter stream.

Only the ingest script (apply.lua) writes them; this module reads them.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

import redis

from featurewatch.contracts import dictionary_key
from featurewatch.errors import InvalidRequest

Clock = Callable[[], float]


def bucket_key(dictionary_id: str, index: int) -> str:
    return dictionary_key(dictionary_id, f"bucket:{index}")


def totals_key(dictionary_id: str) -> str:
    return dictionary_key(dictionary_id, "totals")


def max_key(dictionary_id: str) -> str:
    return dictionary_key(dictionary_id, "max")


def seen_key(dictionary_id: str, event_key: str) -> str:
    return dictionary_key(dictionary_id, f"seen:{event_key}")


def dead_letter_key(dictionary_id: str) -> str:
    return dictionary_key(dictionary_id, "deadletter")


@dataclass(frozen=True)
class BucketLayout:
    """Time buckets of width bucket_s kept for retention_s after they end."""

    bucket_s: int
    retention_s: int

    def index(self, t: float) -> int:
        """The bucket holding time t (seconds since the epoch)."""
        return math.floor(t / self.bucket_s)

    def ttl_ms(self, index: int, now: float) -> int:
        """Milliseconds bucket `index` has left to live at `now` (<= 0: already expired)."""
        return int(((index + 1) * self.bucket_s + self.retention_s - now) * 1000)

    def round_window(self, window_s: float) -> int:
        """A window rounded up to whole buckets; OUT_OF_RANGE beyond the retention."""
        if not math.isfinite(window_s) or window_s <= 0:
            raise InvalidRequest("window", f"{window_s!r} s must be a positive duration",
                                 out_of_range=True)
        buckets = math.ceil(window_s / self.bucket_s)
        if buckets * self.bucket_s > self.retention_s:
            raise InvalidRequest("window", f"{window_s:g} s exceeds the retention of "
                                 f"{self.retention_s} s", out_of_range=True)
        return buckets * self.bucket_s

    def window_indices(self, now: float, window_s: float) -> range:
        """The buckets of a window ending now: the last n buckets, the current one included."""
        n = self.round_window(window_s) // self.bucket_s
        current = self.index(now)
        return range(current - n + 1, current + 1)


@dataclass
class WindowCounts:
    """Everything counted in one dictionary's buckets over a window."""

    window_s: int
    tokens: int = 0
    events: int = 0
    fires: Counter = field(default_factory=Counter)
    hits: Counter = field(default_factory=Counter)
    flagged_max: dict[int, float] = field(default_factory=dict)

    def add_bucket(self, raw: dict[bytes, bytes]) -> None:
        for name, value in raw.items():
            head = name[:1]
            if head.isdigit():
                self.fires[int(name)] += int(value)
            elif name == b"_tokens":
                self.tokens += int(value)
            elif name == b"_events":
                self.events += int(value)
            elif name.startswith(b"h:"):
                self.hits[int(name[2:])] += int(value)
            elif name.startswith(b"m:"):
                feature = int(name[2:])
                self.flagged_max[feature] = max(self.flagged_max.get(feature, 0.0),
                                                float(value))

    def rate(self, feature: int) -> float:
        """Fraction of the window's tokens on which `feature` fired."""
        return self.fires[feature] / self.tokens if self.tokens else 0.0

    def top(self, k: int) -> list[tuple[int, int]]:
        """The k most frequent (feature, fires), ties broken by the smaller id."""
        ranked = sorted(self.fires.items(), key=lambda item: (-item[1], item[0]))
        return [(f, c) for f, c in ranked[:k] if c > 0]


@dataclass(frozen=True)
class Totals:
    """A dictionary's all-time counters."""

    tokens: int = 0
    events: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    deleted: int = 0
    late: int = 0
    fires: dict[int, int] = field(default_factory=dict)
    hits: dict[int, int] = field(default_factory=dict)


class AggregateReader:
    """Windowed and all-time reads; `clock` (seconds) is injectable for tests."""

    def __init__(self, client: redis.Redis, layout: BucketLayout,
                 clock: Clock = time.time) -> None:
        self.client = client
        self.layout = layout
        self.clock = clock

    def window(self, dictionary_id: str, window_s: float) -> WindowCounts:
        """Sum the buckets of the window ending now (one pipelined round trip)."""
        indices = self.layout.window_indices(self.clock(), window_s)
        pipe = self.client.pipeline(transaction=False)
        for index in indices:
            pipe.hgetall(bucket_key(dictionary_id, index))
        counts = WindowCounts(window_s=len(indices) * self.layout.bucket_s)
        for raw in pipe.execute():
            counts.add_bucket(raw)
        return counts

    def firing_rate(self, dictionary_id: str, feature: int,
                    window_s: float) -> tuple[int, int, float]:
        """(fires, tokens, fires / tokens) of one feature over the window."""
        counts = self.window(dictionary_id, window_s)
        return counts.fires[feature], counts.tokens, counts.rate(feature)

    def top_features(self, dictionary_id: str, k: int,
                     window_s: float) -> tuple[list[tuple[int, int]], int]:
        """([(feature, fires)] most frequent first, tokens) over the window."""
        counts = self.window(dictionary_id, window_s)
        return counts.top(k), counts.tokens

    def max_activation(self, dictionary_id: str, features: Iterable[int]) -> dict[int, float]:
        """Largest activation ever ingested per feature (0.0 if it never fired)."""
        features = list(features)
        if not features:
            return {}
        values = self.client.hmget(max_key(dictionary_id), [str(f) for f in features])
        return {f: float(v) if v is not None else 0.0 for f, v in zip(features, values,
                                                                       strict=True)}

    def totals(self, dictionary_id: str) -> Totals:
        raw = {k.decode(): int(v) for k, v in
               self.client.hgetall(totals_key(dictionary_id)).items()}
        per_feature = {"fires": {}, "hits": {}}
        for name, value in raw.items():
            kind, _, feature = name.partition(":")
            if kind in per_feature and feature:
                per_feature[kind][int(feature)] = value
        scalars = {f.name: raw.get(f.name, 0) for f in fields(Totals)
                   if f.name not in per_feature}
        return Totals(**scalars, **per_feature)
