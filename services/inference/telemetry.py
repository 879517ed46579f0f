"""Prometheus metrics of the inference service, on an injected registry.

Names follow Prometheus conventions: `featurewatch_inference_` prefix, base units (seconds),
`_total` on counters (prometheus-client appends it), labels with bounded values only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ITL_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
DROP_REASONS = ("queue_full", "shutdown")


class InferenceMetrics:
    """Every metric the service exports."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "featurewatch_inference_requests", "RPCs finished, by method and gRPC status code.",
            ["method", "code"], registry=registry)
        self.time_to_first_token = Histogram(
            "featurewatch_inference_time_to_first_token_seconds",
            "Time from accepting a Generate request to streaming its first generated token.",
            buckets=TTFT_BUCKETS, registry=registry)
        self.inter_token_latency = Histogram(
            "featurewatch_inference_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one stream.",
            buckets=ITL_BUCKETS, registry=registry)
        self.tokens_generated = Counter(
            "featurewatch_inference_tokens_generated", "Tokens generated and streamed.",
            registry=registry)
        self.prompt_tokens = Counter(
            "featurewatch_inference_prompt_tokens", "Prompt tokens of finished Generate requests.",
            registry=registry)
        self.active_streams = Gauge(
            "featurewatch_inference_active_streams", "Generate streams being served now.",
            registry=registry)
        self.trace_events_published = Counter(
            "featurewatch_inference_trace_events_published",
            "Trace events written to the dictionary's Redis stream.", ["dictionary"],
            registry=registry)
        self.trace_events_dropped = Counter(
            "featurewatch_inference_trace_events_dropped",
            "Trace events dropped before reaching Redis (queue full while Redis was slow or "
            "down, or still queued at shutdown).", ["reason"], registry=registry)
        self.trace_queue_events = Gauge(
            "featurewatch_inference_trace_queue_events",
            "Trace events waiting to be written to Redis.", registry=registry)
        self.redis_up = Gauge(
            "featurewatch_inference_redis_up",
            "1 when the last Redis operation of the trace publisher succeeded, else 0.",
            registry=registry)
        self.ready = Gauge(
            "featurewatch_inference_ready", "1 once the model and dictionaries are loaded.",
            registry=registry)
        for reason in DROP_REASONS:
            self.trace_events_dropped.labels(reason)

    def known_dictionaries(self, dictionary_ids: Iterable[str]) -> None:
        """Create the per-dictionary series at 0 so rates exist before the first event."""
        for dictionary_id in dictionary_ids:
            self.trace_events_published.labels(dictionary_id)


class StreamTimer:
    """Time to first token and inter-token latency of one stream, as the client sees them."""

    def __init__(self, metrics: InferenceMetrics, accepted: float) -> None:
        self.metrics = metrics
        self.last = accepted
        self.first = True

    def token(self) -> None:
        now = time.monotonic()
        if self.first:
            self.metrics.time_to_first_token.observe(now - self.last)
            self.first = False
        else:
            self.metrics.inter_token_latency.observe(now - self.last)
        self.last = now
        self.metrics.tokens_generated.inc()
