"""Test helpers for the monitor: stream workers on a real Redis, a settable clock."""

from __future__ import annotations

import time

import redis

from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import Applier, ApplyResult
from featurewatch.services.monitor.dictionaries import DictionaryInfo, DictionaryRegistry
from featurewatch.services.monitor.ingest import StreamWorker

LAYOUT = BucketLayout(bucket_s=10, retention_s=3600)
D1 = (DictionaryInfo("d1", 100),)


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def stream_worker(client: redis.Redis, consumer: str = "c1", *, clock=time.time,
                  layout: BucketLayout = LAYOUT, bundles=D1,
                  dictionary_id: str = "d1", **kwargs) -> StreamWorker:
    """A StreamWorker of `dictionary_id` in group g, its group created."""
    registry = DictionaryRegistry(client, list(bundles))
    applier = Applier(client, layout, group="g", consumer=consumer, dedup_ttl_s=600,
                      dead_letter_maxlen=100)
    worker = StreamWorker(client, applier, registry, layout, dictionary_id, group="g",
                          consumer=consumer, clock=clock, **kwargs)
    worker.ensure_group()
    return worker


def drain(worker: StreamWorker) -> ApplyResult:
    """Poll until no new entry is left; returns the summed result."""
    total = ApplyResult()
    while (result := worker.poll(None)).entries:
        total += result
    return total
