"""Trace events to Redis Streams, without ever blocking generation.

The engine hands serialized `TraceEvent`s to `offer_threadsafe`; they wait in a bounded asyncio
queue and one task XADDs them (MAXLEN ~ trimming) to the dictionary's stream. While Redis is
down the task retries the event at hand with exponential backoff and the queue absorbs the
rest; once it is full, new events are dropped and counted. `available` tells a fail-closed
server whether events can be delivered right now.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from featurewatch.contracts import DICTIONARIES_KEY, TRACE_FIELD, trace_stream_key
from featurewatch.services.inference.telemetry import InferenceMetrics

log = logging.getLogger(__name__)
REDIS_ERRORS = (RedisError, OSError, TimeoutError)


class TracePublisher:
    """Publishes trace events of the given dictionaries to one Redis."""

    def __init__(self, url: str, metrics: InferenceMetrics, dictionary_ids: Iterable[str], *,
                 queue_size: int = 1024, maxlen: int = 100_000, backoff_s: float = 0.1,
                 backoff_max_s: float = 5.0, health_interval_s: float = 1.0) -> None:
        self.url = url
        self.metrics = metrics
        self.dictionary_ids = sorted(dictionary_ids)
        self.maxlen = maxlen
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.health_interval_s = health_interval_s
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._client: aioredis.Redis | None = None
        self._registered = False
        self._holding = False
        self.available = False
        metrics.trace_queue_events.set_function(self._queue.qsize)
        metrics.known_dictionaries(self.dictionary_ids)

    async def start(self) -> None:
        """Connect (a failure only marks Redis unavailable) and start the delivery task."""
        self._loop = asyncio.get_running_loop()
        # Retries are ours (with backoff), so the client gives up at once on a dead connection.
        self._client = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 0))
        await self._check()
        self._task = asyncio.create_task(self._run(), name="trace-publisher")

    def offer_threadsafe(self, dictionary_id: str, payload: bytes) -> None:
        """Queue an event from any thread; never blocks (a full queue drops and counts it)."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._offer, dictionary_id, payload)
        except RuntimeError:  # loop closed during shutdown
            self.metrics.trace_events_dropped.labels("shutdown").inc()

    def _offer(self, dictionary_id: str, payload: bytes) -> None:
        try:
            self._queue.put_nowait((dictionary_id, payload))
        except asyncio.QueueFull:
            self.metrics.trace_events_dropped.labels("queue_full").inc()

    async def stop(self, drain_s: float = 2.0) -> None:
        """Deliver what is queued for up to `drain_s`, then drop (and count) the rest."""
        held = 0
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_s)
            held = int(self._holding)  # the event being retried is off the queue
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self._queue.qsize() + held
        if left:
            self.metrics.trace_events_dropped.labels("shutdown").inc(left)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _mark(self, up: bool) -> None:
        if up != self.available:
            log.log(logging.INFO if up else logging.WARNING, "redis %s at %s",
                    "reachable" if up else "unreachable", self.url)
        self.available = up
        self.metrics.redis_up.set(1 if up else 0)
        if not up:
            self._registered = False

    async def _check(self) -> None:
        try:
            await self._client.ping()
            await self._register()
            self._mark(True)
        except REDIS_ERRORS:
            self._mark(False)

    async def _register(self) -> None:
        """Announce our dictionaries (after every reconnect: Redis may have lost them)."""
        if not self._registered and self.dictionary_ids:
            await self._client.sadd(DICTIONARIES_KEY, *self.dictionary_ids)
            self._registered = True

    async def _run(self) -> None:
        while True:
            try:
                item = await asyncio.wait_for(self._queue.get(), self.health_interval_s)
            except TimeoutError:
                await self._check()
                continue
            self._holding = True
            try:
                await self._deliver(*item)
            finally:
                self._holding = False
                self._queue.task_done()

    async def _deliver(self, dictionary_id: str, payload: bytes) -> None:
        delay = self.backoff_s
        while True:
            try:
                await self._register()
                await self._client.xadd(trace_stream_key(dictionary_id), {TRACE_FIELD: payload},
                                        maxlen=self.maxlen, approximate=True)
                self._mark(True)
                self.metrics.trace_events_published.labels(dictionary_id).inc()
                return
            except REDIS_ERRORS:
                self._mark(False)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.backoff_max_s)
