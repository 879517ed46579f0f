"""Ingest against a real redis-server: exactly once, dead letters, claims, shared groups."""

from __future__ import annotations

import time

import pytest
from monitor_workers import LAYOUT, drain
from trace_events import Expected, publish, random_events, trace_event

from featurewatch.contracts import TRACE_FIELD, trace_stream_key
from featurewatch.services.monitor.aggregates import (
    AggregateReader,
    bucket_key,
    dead_letter_key,
)

pytestmark = pytest.mark.integration
STREAM = trace_stream_key("d1")


def assert_aggregates(client, expected: Expected) -> None:
    reader = AggregateReader(client, LAYOUT)
    window = reader.window("d1", LAYOUT.retention_s)
    totals = reader.totals("d1")
    assert (totals.events, totals.tokens) == (expected.events, expected.tokens)
    assert (window.events, window.tokens) == (expected.events, expected.tokens)
    assert dict(window.fires) == dict(expected.fires)
    maxes = reader.max_activation("d1", expected.maxes)
    assert maxes == pytest.approx(expected.maxes)


def expected_of(events) -> Expected:
    expected = Expected()
    for event in events:
        expected.add(event)
    return expected


def test_an_event_published_twice_counts_once(client, make_worker):
    events = random_events(20, prefix="twice")
    publish(client, events + events[:5])
    result = drain(make_worker())
    assert (result.applied, result.duplicates, result.increments) == (20, 5, 20 * 20)
    assert_aggregates(client, expected_of(events))
    assert AggregateReader(client, LAYOUT).totals("d1").duplicates == 5


def test_replaying_an_applied_batch_changes_nothing(client, make_worker):
    events = random_events(10, prefix="replay")
    publish(client, events)
    worker = make_worker()
    entries = client.xreadgroup("g", "c1", {STREAM: ">"})[0][1]
    first = worker.process(entries)
    second = worker.process(entries)  # e.g. delivered again after a claim race
    assert (first.applied, first.duplicates) == (10, 0)
    assert (second.applied, second.duplicates) == (0, 10)
    assert_aggregates(client, expected_of(events))
    assert client.xpending(STREAM, "g")["pending"] == 0


def test_malformed_events_are_dead_lettered_and_ingestion_goes_on(client, make_worker):
    good = random_events(3, prefix="good")
    wrong_dictionary = trace_event("x", {1: (1, 1.0)}, dictionary_id="other")
    out_of_range = trace_event("y", {100: (1, 1.0)})
    publish(client, [good[0], b"\x08\xff\xff garbage", good[1], wrong_dictionary, out_of_range,
                     good[2]])
    result = drain(make_worker(batch_size=2))
    assert (result.applied, result.dead_lettered) == (3, 3)
    assert_aggregates(client, expected_of(good))
    letters = client.xrange(dead_letter_key("d1"))
    reasons = [fields[b"reason"].decode() for _, fields in letters]
    assert "payload is not a TraceEvent" in reasons[0]
    assert "dictionary_id: 'other' was published on the stream of 'd1'" in reasons[1]
    assert "id 100 is out of range for d_sae=100" in reasons[2]
    assert letters[0][1][b"event"] == b"\x08\xff\xff garbage"
    assert AggregateReader(client, LAYOUT).totals("d1").dead_lettered == 3
    assert client.xpending(STREAM, "g")["pending"] == 0


def test_entry_without_payload_field_is_dead_lettered(client, make_worker):
    client.xadd(STREAM, {b"something": b"else"})
    publish(client, random_events(1, prefix="after"))
    result = drain(make_worker())
    assert (result.applied, result.dead_lettered) == (1, 1)
    (letter,) = client.xrange(dead_letter_key("d1"))
    assert letter[1][b"reason"] == f"entry has no {TRACE_FIELD.decode()!r} field".encode()


def test_crashed_consumers_pending_entries_are_claimed(client, make_worker):
    events = random_events(30, prefix="claim")
    publish(client, events)
    alive = make_worker("alive", claim_idle_s=0.05, batch_size=7)
    # "dead" reads everything and crashes before applying it.
    assert len(client.xreadgroup("g", "dead", {STREAM: ">"}, count=100)[0][1]) == 30
    pending = client.xpending_range(STREAM, "g", "-", "+", 100)
    client.xdel(STREAM, pending[-1]["message_id"])  # trimmed away while pending
    assert drain(alive).entries == 0  # nothing new: all of it is pending on "dead"
    time.sleep(0.1)
    result = alive.reclaim()
    assert (result.applied, result.deleted) == (29, 1)
    assert alive.stats.claimed == 29
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert_aggregates(client, expected_of(events[:29]))
    assert AggregateReader(client, LAYOUT).totals("d1").deleted == 1


def test_a_restarted_consumer_finishes_its_own_pending_entries(client, make_worker):
    events = random_events(12, prefix="own")
    publish(client, events)
    worker = make_worker("c1", batch_size=5)
    ids = [e[0] for e in client.xreadgroup("g", "c1", {STREAM: ">"}, count=100)[0][1]]
    client.xdel(STREAM, ids[4])  # trimmed away while pending: acknowledged, counted as deleted
    result = worker.recover_own()
    assert (result.applied, result.deleted) == (11, 1)
    assert client.xpending(STREAM, "g")["pending"] == 0
    assert_aggregates(client, expected_of(events[:4] + events[5:]))


def test_an_event_the_script_rejects_is_isolated_and_nothing_is_half_applied(client,
                                                                              make_worker):
    now = 1_700_000_000.0
    good = trace_event("good", {1: (2, 1.0)}, t=now - 30)
    doomed = trace_event("doomed", {2: (3, 1.0)}, t=now - 5)
    later = trace_event("later", {3: (1, 1.0)}, t=now - 30)
    client.set(bucket_key("d1", LAYOUT.index(now - 5)), "not a hash")
    publish(client, [good, doomed, later])
    result = drain(make_worker(clock=lambda: now))
    assert (result.applied, result.dead_lettered) == (2, 1)
    (letter,) = client.xrange(dead_letter_key("d1"))
    assert b"apply failed" in letter[1][b"reason"] and b"WRONGTYPE" in letter[1][b"reason"]
    totals = AggregateReader(client, LAYOUT).totals("d1")
    assert (totals.events, totals.tokens, totals.dead_lettered) == (2, 20, 1)
    client.delete(bucket_key("d1", LAYOUT.index(now - 5)))
    reader = AggregateReader(client, LAYOUT, clock=lambda: now)
    assert dict(reader.window("d1", 60).fires) == {1: 2, 3: 1}
    assert reader.max_activation("d1", [2]) == {2: 0.0}
    assert client.xpending(STREAM, "g")["pending"] == 0


def test_events_published_before_the_group_exists_are_counted(client, make_worker):
    events = random_events(4, prefix="early")
    publish(client, events)
    assert drain(make_worker()).applied == 4


def test_flagged_features_count_fires_and_hits_above_min_activation(client, make_worker):
    client.hset("featurewatch:{d1}:flag_min", "2", "1.0")
    publish(client, [trace_event("a", {2: (3, 0.5), 4: (1, 9.0)}),
                     trace_event("b", {2: (1, 1.5)}), trace_event("c", {2: (2, 1.0)})])
    drain(make_worker())
    reader = AggregateReader(client, LAYOUT)
    totals = reader.totals("d1")
    assert totals.fires == {2: 6} and totals.hits == {2: 2}
    window = reader.window("d1", 60)
    assert window.hits == {2: 2} and window.flagged_max == {2: 1.5}
