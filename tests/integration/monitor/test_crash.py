"""Crash test: kill -9 the monitor process repeatedly while it ingests; nothing is lost and
nothing is counted twice.

A publisher thread keeps adding events (with some deliberate re-publications of the same
event); the monitor (`featurewatch serve monitor`, a real subprocess) is SIGKILLed at random
moments and restarted, alternating two consumer names so that both recovery paths run: a
restarted consumer finishing its own pending entries, and another one claiming them.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time

import pytest
from servers import wait_until
from trace_events import Expected, publish, random_events, write_bundle

from featurewatch.contracts import trace_stream_key
from featurewatch.services.monitor.aggregates import AggregateReader, BucketLayout
from featurewatch.stack import featurewatch_argv

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GROUP = "featurewatch-monitor"
STREAM = trace_stream_key("d1")
MIN_KILLS, MIN_KILLS_WITH_PENDING, MAX_KILLS = 6, 3, 40


class Publisher(threading.Thread):
    """Publishes chunks of distinct events, re-publishing one old event every 5th chunk."""

    def __init__(self, client) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.stop = threading.Event()
        self.expected = Expected()
        self.entries = 0
        self.duplicates = 0
        self.sent = []

    def run(self) -> None:
        chunk = 0
        while not self.stop.is_set():
            events = random_events(25, prefix=f"crash{chunk}", seed=chunk, features=30)
            if chunk % 5 == 4:
                events.append(random.Random(chunk).choice(self.sent))
                self.duplicates += 1
            publish(self.client, events)
            for event in events[:25]:
                self.expected.add(event)
            self.sent += events[:25]
            self.entries += len(events)
            chunk += 1
            time.sleep(0.01)


def start_monitor(redis_url: str, bundle, consumer: str, log) -> subprocess.Popen:
    argv = featurewatch_argv("serve", "monitor", "--redis-url", redis_url, "--dictionary",
                             str(bundle), "--port=-1", "--metrics-port=-1", "--consumer-name",
                             consumer, "--batch-size", "8", "--claim-idle-s", "0.3",
                             "--log-level", "WARNING")
    env = dict(os.environ, FEATUREWATCH_MONITOR_CLAIM_INTERVAL_S="0.2",
               FEATUREWATCH_MONITOR_BLOCK_MS="200")
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_for(predicate, timeout: float, what: str) -> None:
    wait_until(predicate, timeout, what, interval=0.02)


def test_kill_9_during_ingestion_loses_nothing_and_counts_nothing_twice(
        redis_server, client, tmp_path):
    bundle = write_bundle(tmp_path / "bundle", "d1", 100)
    reader = AggregateReader(client, BucketLayout(10, 3600))
    rng = random.Random(0)
    publisher = Publisher(client)
    publisher.start()
    log = (tmp_path / "monitor.log").open("ab")
    kills = with_pending = 0
    try:
        while kills < MAX_KILLS and (kills < MIN_KILLS or with_pending < MIN_KILLS_WITH_PENDING):
            proc = start_monitor(redis_server.url, bundle, "crash-" + "ab"[kills % 2], log)
            before = reader.totals("d1").events
            wait_for(lambda b=before, p=proc: reader.totals("d1").events > b
                     or p.poll() is not None, 60, "the monitor never made progress")
            assert proc.poll() is None, (tmp_path / "monitor.log").read_text()[-3000:]
            time.sleep(rng.uniform(0.0, 0.15))
            proc.kill()  # SIGKILL: no handler, no cleanup
            proc.wait()
            kills += 1
            with_pending += client.xpending(STREAM, GROUP)["pending"] > 0
        publisher.stop.set()
        publisher.join()
        assert with_pending >= MIN_KILLS_WITH_PENDING, (kills, with_pending)
        final = start_monitor(redis_server.url, bundle, "crash-final", log)
        total = publisher.entries
        wait_for(lambda: sum(reader.totals("d1").__dict__[k] for k in ("events", "duplicates"))
                 >= total, 120, "the final monitor did not catch up")
        wait_for(lambda: client.xpending(STREAM, GROUP)["pending"] == 0, 30, "pending left")
        final.terminate()
        assert final.wait(30) == 0
    finally:
        publisher.stop.set()
        log.close()
    expected = publisher.expected
    totals = reader.totals("d1")
    assert (totals.events, totals.duplicates) == (expected.events, publisher.duplicates)
    assert (totals.tokens, totals.dead_lettered, totals.deleted) == (expected.tokens, 0, 0)
    window = reader.window("d1", 3600)
    assert (window.events, window.tokens) == (expected.events, expected.tokens)
    assert dict(window.fires) == dict(expected.fires)
    assert reader.max_activation("d1", expected.maxes) == pytest.approx(expected.maxes)
    assert client.xinfo_groups(STREAM)[0]["lag"] == 0
