"""Decode and validate stream entries into countable events or dead letters.

Validation never raises: anything that cannot be counted becomes a BadEvent whose reason
names the field, so one malformed payload never stops ingestion.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from google.protobuf.message import DecodeError

from featurewatch.contracts import TRACE_FIELD
from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import BadEvent, Batch, GoodEvent
from featurewatch.v1 import trace_pb2

#: d_sae of a dictionary, learning it from the event when unknown (returns the value that holds).
DSaeLookup = Callable[[int], int | None]


def as_str(raw: bytes | str) -> str:
    """A Redis reply value (entry id, consumer or group name) as str."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _arrays(event: trace_pb2.TraceEvent) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """(ids, fire counts, max activations) as little-endian arrays, or why they are invalid."""
    n = len(event.feature_ids)
    lengths = (len(event.fire_counts), len(event.max_activations))
    if lengths != (n, n) or len(event.sum_activations) not in (0, n):
        return (f"feature arrays differ in length: feature_ids={n}, fire_counts={lengths[0]}, "
                f"max_activations={lengths[1]}, sum_activations={len(event.sum_activations)}")
    return (np.asarray(event.feature_ids, dtype="<u4"), np.asarray(event.fire_counts, dtype="<u4"),
            np.asarray(event.max_activations, dtype="<f4"))


def _check_arrays(ids: np.ndarray, counts: np.ndarray, maxes: np.ndarray, tokens: int,
                  d_sae: int) -> str | None:
    if not len(ids):
        return None
    if int(ids.max()) >= d_sae:
        return f"feature_ids: id {int(ids.max())} is out of range for d_sae={d_sae}"
    if len(np.unique(ids)) != len(ids):
        return "feature_ids: an id appears twice"
    if int(counts.max()) > tokens:
        return f"fire_counts: {int(counts.max())} exceeds token_count={tokens}"
    if not np.isfinite(maxes).all():
        return "max_activations: not all finite"
    return None


def _check_event(event: trace_pb2.TraceEvent, dictionary_id: str,
                 d_sae_of: DSaeLookup) -> tuple[np.ndarray, np.ndarray, np.ndarray] | str:
    """The event's arrays, or the reason it cannot be counted."""
    if not event.request_id:
        return "request_id: empty"
    if event.dictionary_id != dictionary_id:
        return (f"dictionary_id: {event.dictionary_id!r} was published on the stream of "
                f"{dictionary_id!r}")
    d_sae = d_sae_of(event.d_sae)
    if d_sae is None:
        return "d_sae: 0 and the dictionary's d_sae is not known"
    if event.d_sae and event.d_sae != d_sae:
        return f"d_sae: {event.d_sae} but dictionary {dictionary_id!r} has d_sae={d_sae}"
    arrays = _arrays(event)
    if isinstance(arrays, str):
        return arrays
    return _check_arrays(*arrays, event.token_count, d_sae) or arrays


def event_time(event: trace_pb2.TraceEvent, now: float, bucket_s: int) -> float:
    """The event's time; unset → now; clocks ahead of ours by more than a bucket → now."""
    if not event.HasField("time"):
        return now
    t = event.time.seconds + event.time.nanos / 1e9
    return now if t > now + bucket_s else t


def decode_entry(entry_id: bytes | str, fields: dict | None, dictionary_id: str,
                 d_sae_of: DSaeLookup, layout: BucketLayout, now: float,
                 batch: Batch) -> None:
    """Append the entry to `batch` as good, bad or gone (deleted from the stream)."""
    entry = as_str(entry_id)
    if not fields:
        batch.gone.append(entry)
        return
    payload = fields.get(TRACE_FIELD)
    if payload is None:
        batch.bad.append(BadEvent(entry, f"entry has no {TRACE_FIELD.decode()!r} field", b""))
        return
    event = trace_pb2.TraceEvent()
    try:
        event.ParseFromString(payload)
    except (DecodeError, ValueError) as exc:
        batch.bad.append(BadEvent(entry, f"payload is not a TraceEvent: {exc}", payload))
        return
    checked = _check_event(event, dictionary_id, d_sae_of)
    if isinstance(checked, str):
        batch.bad.append(BadEvent(entry, checked, payload))
        return
    index = layout.index(event_time(event, now, layout.bucket_s))
    bucket = index if layout.ttl_ms(index, now) > 0 else None
    batch.good.append(GoodEvent(entry, f"{event.request_id}:{event.chunk_index}", bucket,
                                event.token_count, *checked))
