"""The script's inputs: every key in one hash slot, arrays packed little-endian."""

from __future__ import annotations

import json
import struct

import numpy as np
from redis.crc import key_slot

from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import (
    Applier,
    BadEvent,
    Batch,
    GoodEvent,
    script_source,
)


class NoRedis:
    def register_script(self, source):
        return None


def event(entry: str, key: str, bucket, ids, counts, maxes) -> GoodEvent:
    return GoodEvent(entry, key, bucket, 10, np.array(ids, "<u4"), np.array(counts, "<u4"),
                     np.array(maxes, "<f4"))


def encode():
    applier = Applier(NoRedis(), BucketLayout(10, 60), group="g", consumer="c",
                      dedup_ttl_s=5, dead_letter_maxlen=7)
    batch = Batch(good=[event("1-0", "r:0", 100, [3, 9], [1, 2], [0.5, 1.5]),
                        event("1-1", "s:0", None, [4], [1], [2.0]),
                        event("1-2", "t:0", 101, [], [], [])],
                  bad=[BadEvent("1-3", "broken", b"\xff")], gone=["1-4"])
    return applier.encode("dict-a", batch, now=1005.0)


def test_every_key_is_in_the_dictionarys_slot():
    keys, _ = encode()
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert keys[0] == "featurewatch:{dict-a}:traces"
    assert keys[5:7] == ["featurewatch:{dict-a}:bucket:100", "featurewatch:{dict-a}:bucket:101"]
    assert keys[7:] == ["featurewatch:{dict-a}:seen:r:0", "featurewatch:{dict-a}:seen:s:0",
                        "featurewatch:{dict-a}:seen:t:0",
                        "featurewatch:{dict-a}:seen:deadletter:1-3"]


def test_arguments():
    _, args = encode()
    group, nb, doc, blob, payload = args
    doc = json.loads(doc)
    assert (group, nb, payload) == ("g", 2, b"\xff")
    assert doc["ok"] == [["1-0", 1, 10, 2], ["1-1", 0, 10, 1], ["1-2", 2, 10, 0]]
    assert doc["ttl"] == [65_000, 75_000]  # bucket end + 60 s retention - now
    assert (doc["dedup_ms"], doc["dl_maxlen"], doc["consumer"]) == (5000, 7, "c")
    assert doc["bad"] == [["1-3", "broken"]] and doc["gone"] == ["1-4"]
    assert struct.unpack("<2I2I2f1I1I1f", blob) == (3, 9, 1, 2, 0.5, 1.5, 4, 1, 2.0)


def test_script_is_package_data():
    assert "redis.call('XACK'" in script_source()
