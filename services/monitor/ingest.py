"""One dictionary's trace stream, consumed through the shared consumer group.

A StreamWorker reads new entries (XREADGROUP >), first finishes the entries it still owns
from before a crash (XREADGROUP 0), takes over entries that a crashed replica left pending
(XAUTOCLAIM), and hands each batch to apply.lua, which counts and acknowledges it atomically.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from redis.exceptions import ResponseError

from featurewatch.contracts import trace_stream_key
from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import Applier, ApplyResult, BadEvent, Batch
from featurewatch.services.monitor.dictionaries import DictionaryRegistry
from featurewatch.services.monitor.events import as_str, decode_entry

log = logging.getLogger(__name__)
REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class WorkerStats:
    """Counters of what this process did (the all-time totals live in Redis)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result = ApplyResult()
        self.claimed = 0
        self.batches = 0
        self.redis_errors = 0
        self.last_success = 0.0

    def add(self, result: ApplyResult, claimed: int = 0) -> None:
        with self.lock:
            self.result += result
            self.claimed += claimed
            self.batches += 1
            self.last_success = time.time()


class StreamWorker:
    """Consumes one dictionary's stream as `consumer` of `group`."""

    def __init__(self, client: redis.Redis, applier: Applier, registry: DictionaryRegistry,
                 layout: BucketLayout, dictionary_id: str, *, group: str, consumer: str,
                 batch_size: int = 128, claim_idle_s: float = 30.0,
                 consumer_expiry_s: float = 3600.0, clock: Callable[[], float] = time.time,
                 stats: WorkerStats | None = None) -> None:
        self.client = client
        self.applier = applier
        self.registry = registry
        self.layout = layout
        self.dictionary_id = dictionary_id
        self.stream = trace_stream_key(dictionary_id)
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.consumer_expiry_ms = int(consumer_expiry_s * 1000)
        self.clock = clock
        self.stats = stats or WorkerStats()
        self._known_d_sae: int | None = None

    def ensure_group(self) -> None:
        """Create the group at the start of the stream, so no event published before the first
        monitor started is missed (an existing group is kept as it is)."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _d_sae(self, event_d_sae: int) -> int | None:
        # A dictionary's d_sae never changes: once known it is not read from Redis again.
        if self._known_d_sae is None:
            # learn_d_sae returns the known value when there is one: no separate lookup first.
            self._known_d_sae = (self.registry.learn_d_sae(self.dictionary_id, event_d_sae)
                                 if event_d_sae > 0 else self.registry.d_sae(self.dictionary_id))
        return self._known_d_sae

    def process(self, entries: list, deleted: list | None = None) -> ApplyResult:
        """Decode `entries` [(id, fields)] and apply them (plus `deleted` ids) in one call."""
        now = self.clock()
        batch = Batch(gone=[as_str(i) for i in deleted or ()])
        for entry_id, fields in entries:
            decode_entry(entry_id, fields, self.dictionary_id, self._d_sae, self.layout, now,
                         batch)
        try:
            return self.applier.apply(self.dictionary_id, batch, now)
        except ResponseError as exc:
            if "NOGROUP" in str(exc) or len(batch) == 1:
                raise
            log.error("%s: batch failed (%s); applying its %d entries one by one",
                      self.stream, exc, len(batch))
            return self._apply_singly(batch, now)

    def _apply_singly(self, batch: Batch, now: float) -> ApplyResult:
        """Isolate an entry the script rejects: it is dead-lettered, the others are counted."""
        total = ApplyResult()
        singles = [Batch(good=[e]) for e in batch.good] + [Batch(bad=[e]) for e in batch.bad]
        singles += [Batch(gone=[e]) for e in batch.gone]
        for single in singles:
            try:
                total += self.applier.apply(self.dictionary_id, single, now)
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or not single.good:
                    raise
                event = single.good[0]
                reason = f"apply failed: {exc}"
                total += self.applier.apply(
                    self.dictionary_id, Batch(bad=[BadEvent(event.entry_id, reason, b"")]), now)
        return total

    def _read(self, start: str, block_ms: int | None) -> list:
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start},
                                       count=self.batch_size, block=block_ms)
        return reply[0][1] if reply else []

    def recover_own(self) -> ApplyResult:
        """Apply the entries delivered to this consumer before it crashed (its PEL)."""
        total = ApplyResult()
        start = "0"
        while entries := self._read(start, None):
            result = self.process(entries)
            self.stats.add(result)
            total += result
            start = as_str(entries[-1][0])
        return total

    def poll(self, block_ms: int | None) -> ApplyResult:
        """Read and apply one batch of new entries (waiting up to block_ms for one)."""
        entries = self._read(">", block_ms)
        if not entries:
            return ApplyResult()
        result = self.process(entries)
        self.stats.add(result)
        return result

    def reclaim(self, max_rounds: int = 100) -> ApplyResult:
        """Take over and apply entries pending longer than claim_idle_s on any consumer."""
        total = ApplyResult()
        cursor = "0-0"
        for _ in range(max_rounds):
            reply = self.client.xautoclaim(self.stream, self.group, self.consumer,
                                           self.claim_idle_ms, start_id=cursor,
                                           count=self.batch_size)
            cursor, entries = reply[0], reply[1]
            deleted = reply[2] if len(reply) > 2 else []
            if entries or deleted:
                result = self.process(entries, deleted)
                self.stats.add(result, claimed=len(entries))
                total += result
            if cursor in (b"0-0", "0-0"):
                break
        return total

    def expire_consumers(self) -> list[str]:
        """Remove other consumers idle longer than consumer_expiry_s with nothing pending."""
        removed = []
        for info in self.client.xinfo_consumers(self.stream, self.group):
            name = as_str(info["name"])
            if (name != self.consumer and info["pending"] == 0
                    and info["idle"] > self.consumer_expiry_ms):
                self.client.xgroup_delconsumer(self.stream, self.group, name)
                removed.append(name)
        return removed

    def run(self, stop: threading.Event, *, block_ms: int = 1000,
            claim_interval_s: float = 5.0, backoff_max_s: float = 5.0) -> None:
        """Consume until `stop` is set; Redis outages are waited out with backoff."""
        backoff = 0.1
        next_claim = 0.0
        started = False
        while not stop.is_set():
            try:
                if not started:
                    self.ensure_group()
                    self.recover_own()
                    started = True
                if time.monotonic() >= next_claim:
                    self.reclaim()
                    self.expire_consumers()
                    next_claim = time.monotonic() + claim_interval_s
                self.poll(block_ms)
                backoff = 0.1
            except REDIS_ERRORS as exc:
                with self.stats.lock:
                    self.stats.redis_errors += 1
                log.warning("%s: redis unavailable (%s); retrying in %.1fs", self.stream, exc,
                            backoff)
                stop.wait(backoff)
                backoff = min(2 * backoff, backoff_max_s)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: consumer group vanished; creating it again", self.stream)
                started = False
