"""The monitor's /metrics: a custom Collector that reads the aggregates from Redis per scrape.

Aggregates live in Redis, so every replica exports the same cluster-wide values for them
(queries and alerts aggregate with `max by (...)`, never `sum`); counters of this process only
(batches, claims, Redis errors) are summed. Cardinality is bounded: a `feature` label appears
only on flagged features; the top features are exported by `rank`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from featurewatch.contracts import trace_stream_key
from featurewatch.services.monitor.aggregates import AggregateReader, Totals, WindowCounts
from featurewatch.services.monitor.dictionaries import DictionaryRegistry
from featurewatch.services.monitor.drift import firing_drift
from featurewatch.services.monitor.events import as_str
from featurewatch.services.monitor.flags import Flag, FlagStore
from featurewatch.services.monitor.ingest import WorkerStats

log = logging.getLogger(__name__)
P = "featurewatch_monitor_"
FLAG_LABELS = ["dictionary", "feature", "name", "severity"]


@dataclass(frozen=True)
class MetricsOptions:
    """What the collector exports (from MonitorConfig)."""

    group: str
    window_s: int
    top_k: int
    drift_min_tokens: int


def _families(window: str) -> dict[str, Metric]:
    d, w = ["dictionary"], ["dictionary", "window"]
    c, g = CounterMetricFamily, GaugeMetricFamily
    specs = [
        (c, "tokens_observed", "Tokens covered by ingested trace events.", d),
        (c, "events_processed", "Trace events counted (each exactly once).", d),
        (c, "events_dead_lettered", "Malformed trace events moved to the dead-letter stream.", d),
        (c, "events_duplicate", "Repeated deliveries of already counted events (not counted).",
         d),
        (c, "events_late", "Events older than the retention (in totals, not in windows).", d),
        (c, "events_deleted", "Stream entries trimmed away before they were processed.", d),
        (g, "consumer_lag", "Stream entries not yet delivered to the consumer group.", d),
        (g, "pending_events", "Entries delivered but not yet acknowledged.", d),
        (g, "consumers", "Consumers in the group (monitor replicas, live or idle).", d),
        (g, "window_tokens", f"Tokens observed in the last {window}.", w),
        (g, "features_fired_fraction",
         f"Fraction of the dictionary's features that fired in the last {window}.", w),
        (g, "drift_js_divergence", "Jensen-Shannon divergence (bits) between live feature "
         f"firing in the last {window} and the training-time densities.", w),
        (g, "top_feature_id", f"Feature id at each rank of firing in the last {window}.",
         ["dictionary", "window", "rank"]),
        (g, "top_feature_firing_rate", "Firing rate (fires per token) of the feature at each "
         "rank.", ["dictionary", "window", "rank"]),
        (c, "flagged_feature_fires", "Tokens on which a flagged feature fired while flagged.",
         FLAG_LABELS),
        (c, "flagged_feature_hits", "Events in which a flagged feature reached its "
         "min_activation while flagged.", FLAG_LABELS),
        (g, "flagged_feature_firing_rate", f"Fires per token of a flagged feature in the last "
         f"{window}.", [*FLAG_LABELS, "window"]),
        (g, "flagged_feature_window_hits", f"Hits of a flagged feature in the last {window}.",
         [*FLAG_LABELS, "window"]),
        (g, "flagged_feature_max_activation", "Largest activation of a flagged feature ever "
         "ingested.", FLAG_LABELS),
        (g, "flagged_feature_training_density", "Training-time density of a flagged feature.",
         FLAG_LABELS),
        (g, "flag_info", "A flagged feature's settings (value 1).",
         [*FLAG_LABELS, "min_activation", "runbook_url"]),
    ]
    return {name: cls(P + name, doc, labels=labels) for cls, name, doc, labels in specs}


class MonitorCollector(Collector):
    """Reads Redis on every scrape; a Redis failure yields redis_up 0, never a scrape error."""

    def __init__(self, client: redis.Redis, registry: DictionaryRegistry, reader: AggregateReader,
                 flags: FlagStore, options: MetricsOptions, stats: WorkerStats,
                 workers: Callable[[], int] = lambda: 0) -> None:
        self.client = client
        self.dictionaries = registry
        self.reader = reader
        self.flags = flags
        self.options = options
        self.stats = stats
        self.workers = workers

    def register(self, registry: CollectorRegistry) -> MonitorCollector:
        registry.register(self)
        return self

    def describe(self) -> list:
        return []  # metrics depend on Redis; describing them would query it at registration

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        families = _families(f"{self.options.window_s}s")
        up = 1
        try:
            for dictionary_id in self.dictionaries.ids():
                self._dictionary(families, dictionary_id)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: redis query failed: %s", exc)
            families = {}
            up = 0
        yield from families.values()
        yield from self._local(up, time.perf_counter() - started)

    def _dictionary(self, fam: dict[str, Metric], dictionary_id: str) -> None:
        totals = self.reader.totals(dictionary_id)
        d = [dictionary_id]
        for name, value in (("tokens_observed", totals.tokens), ("events_processed", totals.events),
                            ("events_dead_lettered", totals.dead_lettered),
                            ("events_duplicate", totals.duplicates), ("events_late", totals.late),
                            ("events_deleted", totals.deleted)):
            fam[name].add_metric(d, value)
        self._group(fam, dictionary_id)
        window = self.reader.window(dictionary_id, self.options.window_s)
        w = [dictionary_id, f"{self.options.window_s}s"]
        fam["window_tokens"].add_metric(w, window.tokens)
        d_sae = self.dictionaries.d_sae(dictionary_id)
        if d_sae:
            fired = sum(1 for count in window.fires.values() if count > 0)
            fam["features_fired_fraction"].add_metric(w, fired / d_sae)
        density = self.dictionaries.density(dictionary_id)
        if density is not None and window.tokens >= max(self.options.drift_min_tokens, 1):
            drift = firing_drift(density, window.fires)
            if drift is not None:
                fam["drift_js_divergence"].add_metric(w, drift)
        for rank, (feature, fires) in enumerate(window.top(self.options.top_k), start=1):
            fam["top_feature_id"].add_metric([*w, str(rank)], feature)
            fam["top_feature_firing_rate"].add_metric([*w, str(rank)], fires / window.tokens)
        self._flagged(fam, dictionary_id, totals, window)

    def _group(self, fam: dict[str, Metric], dictionary_id: str) -> None:
        stream = trace_stream_key(dictionary_id)
        try:
            groups = self.client.xinfo_groups(stream)
        except redis.ResponseError:  # the stream does not exist yet
            groups = []
        for group in groups:
            if as_str(group["name"]) != self.options.group:
                continue
            lag = group.get("lag")
            if lag is None:  # unknown after deletions: the stream length bounds it
                lag = self.client.xlen(stream)
            fam["consumer_lag"].add_metric([dictionary_id], lag)
            fam["pending_events"].add_metric([dictionary_id], group["pending"])
            fam["consumers"].add_metric([dictionary_id], group["consumers"])

    def _flagged(self, fam: dict[str, Metric], dictionary_id: str, totals: Totals,
                 window: WindowCounts) -> None:
        flags: list[Flag] = self.flags.list(dictionary_id)
        if not flags:
            return
        maxima = self.reader.max_activation(dictionary_id, [f.feature for f in flags])
        density = self.dictionaries.density(dictionary_id)
        window_label = f"{self.options.window_s}s"
        for flag in flags:
            labels = [dictionary_id, str(flag.feature), flag.name, flag.severity]
            fam["flagged_feature_fires"].add_metric(labels, totals.fires.get(flag.feature, 0))
            fam["flagged_feature_hits"].add_metric(labels, totals.hits.get(flag.feature, 0))
            fam["flagged_feature_firing_rate"].add_metric([*labels, window_label],
                                                          window.rate(flag.feature))
            fam["flagged_feature_window_hits"].add_metric([*labels, window_label],
                                                          window.hits[flag.feature])
            fam["flagged_feature_max_activation"].add_metric(labels, maxima[flag.feature])
            if density is not None:
                fam["flagged_feature_training_density"].add_metric(
                    labels, float(density[flag.feature]))
            fam["flag_info"].add_metric(
                [*labels, f"{flag.min_activation:g}", flag.runbook_url], 1)

    def _local(self, up: int, seconds: float) -> Iterator[Metric]:
        with self.stats.lock:
            batches, claimed = self.stats.batches, self.stats.claimed
            errors, last = self.stats.redis_errors, self.stats.last_success
        for cls, name, doc, value in (
            (GaugeMetricFamily, "redis_up", "1 when this scrape's Redis queries succeeded.", up),
            (GaugeMetricFamily, "stream_workers", "Dictionary streams this replica consumes.",
             self.workers()),
            (CounterMetricFamily, "batches", "Batches applied by this replica.", batches),
            (CounterMetricFamily, "entries_claimed", "Entries this replica took over from "
             "crashed consumers (XAUTOCLAIM).", claimed),
            (CounterMetricFamily, "redis_errors", "Redis connection failures of this "
             "replica's stream workers.", errors),
            (GaugeMetricFamily, "last_batch_timestamp_seconds",
             "When this replica last applied a batch (0 = never).", last),
            (GaugeMetricFamily, "scrape_duration_seconds",
             "Time this scrape spent reading Redis.", seconds),
        ):
            yield cls(P + name, doc, value=value)
