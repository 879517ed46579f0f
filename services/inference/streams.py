"""The asyncio side of engine work: handles that carry results from the worker thread back.

The engine's worker thread never touches the event loop directly; it posts items with
`call_soon_threadsafe`, so the loop is never blocked by model work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from featurewatch.services.inference.domain import (
    GenerationRequest,
    GenerationSummary,
    TokenOut,
    TraceRequest,
)

END = object()
"""Marks the end of a generation stream."""


class Expired(Exception):
    """The request's deadline passed before generation finished."""


class EngineClosed(Exception):
    """The engine shut down before the request finished."""


def _post(loop: asyncio.AbstractEventLoop, fn, *args) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
        loop.call_soon_threadsafe(fn, *args)


class GenerationHandle:
    """One Generate request in flight: an async iterator of TokenOut then a GenerationSummary."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop,
                 timeout_s: float | None = None) -> None:
        self.request = request
        self.loop = loop
        self.accepted = time.monotonic()
        self.deadline = None if timeout_s is None else self.accepted + timeout_s
        self.cancelled = False
        self.steps = 0
        """Forward passes run for this request."""
        self._queue: asyncio.Queue = asyncio.Queue()

    def cancel(self) -> None:
        """Ask the worker to stop this request before its next forward pass."""
        self.cancelled = True

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def deliver(self, item: TokenOut | GenerationSummary | BaseException | object) -> None:
        """Loop side: queue an item for the iterator (called through an Outbox)."""
        self._queue.put_nowait(item)

    def __aiter__(self) -> GenerationHandle:
        return self

    async def __anext__(self) -> TokenOut | GenerationSummary:
        item = await self._queue.get()
        if item is END:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


def _deliver_all(pairs: list[tuple[GenerationHandle, object]]) -> None:
    for handle, item in pairs:
        handle.deliver(item)


class Outbox:
    """Worker side: items for handles, handed to each event loop with one wake-up per flush
    (a batched decode step produces one token per stream; waking the loop once per step
    instead of once per token keeps the loop cheap at high concurrency)."""

    def __init__(self) -> None:
        self._pending: dict[asyncio.AbstractEventLoop, list] = {}

    def put(self, handle: GenerationHandle, item: object) -> None:
        self._pending.setdefault(handle.loop, []).append((handle, item))

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for loop, pairs in pending.items():
            _post(loop, _deliver_all, pairs)


@dataclass
class TraceJob:
    """A Trace request waiting for the worker; the result arrives through `future`."""

    request: TraceRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future

    def resolve(self, result: list[TokenOut] | BaseException) -> None:
        def settle() -> None:
            if self.future.done():  # the caller gave up (cancelled)
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        _post(self.loop, settle)
