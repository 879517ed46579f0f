"""MonitorConfig: everything the monitor reads at start-up, and nothing later."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurewatch.config import check_fields, load_config
from featurewatch.errors import ConfigError

ENV_PREFIX = "FEATUREWATCH_MONITOR_"
TOML_TABLE = "monitor"


@dataclass(frozen=True)
class MonitorConfig:
    """Redis, consumer group, aggregation windows, flags and servers of one monitor replica."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis holding the trace streams and the aggregates."""
    dictionaries: tuple[str, ...] = ()
    """Dictionary bundle directories: their cfg.json gives d_sae, metrics.json the training
    densities used for drift. Dictionaries that only publish events are watched too."""
    flags_file: str = ""
    """YAML file with a `flags:` list, upserted into Redis at start-up ('' = none)."""
    host: str = "0.0.0.0"
    """Address the gRPC API and /metrics servers bind to."""
    port: int = 50052
    """gRPC port of MonitorService and grpc.health.v1 (0 = any free port, -1 = disabled)."""
    metrics_port: int = 9465
    """Port of the Prometheus /metrics HTTP server (0 = any free port, -1 = disabled)."""
    group: str = "featurewatch-monitor"
    """Redis Streams consumer group shared by all monitor replicas."""
    consumer_name: str = ""
    """This replica's consumer name, stable across restarts ('' = the host name, which is the
    pod name on Kubernetes). A restarted consumer first finishes its own pending entries."""
    batch_size: int = 128
    """Stream entries read and applied per Lua call."""
    block_ms: int = 1000
    """How long one XREADGROUP waits for new entries."""
    claim_idle_s: float = 30.0
    """Pending entries idle this long (their consumer crashed) are taken over with XAUTOCLAIM."""
    claim_interval_s: float = 5.0
    """How often each stream worker runs XAUTOCLAIM."""
    consumer_expiry_s: float = 3600.0
    """Consumers idle this long with nothing pending are removed from the group."""
    bucket_s: int = 10
    """Width of the time buckets counting fires and tokens."""
    retention_s: int = 3600
    """How long buckets are kept: the longest window any query may ask for."""
    window_s: int = 300
    """Window of the firing rates, top features, fired fraction and drift in /metrics."""
    dedup_ttl_s: int = 3600
    """How long an event's idempotency key is kept; a copy of the same event (request_id,
    chunk_index) arriving within it is acknowledged but not counted again."""
    dead_letter_maxlen: int = 10_000
    """Approximate length cap of each dictionary's dead-letter stream."""
    top_k: int = 10
    """Top features exported in /metrics (by rank, without a feature label)."""
    drift_min_tokens: int = 1000
    """Tokens needed in the window before drift is exported (noise guard)."""
    discovery_interval_s: float = 5.0
    """How often new dictionaries are looked up in the featurewatch:dictionaries set."""
    grace_s: float = 5.0
    """Seconds the stream workers get to finish their batch on shutdown."""

    def __post_init__(self) -> None:
        check_fields(self, "monitor",
                     positive=("batch_size", "bucket_s", "retention_s", "window_s",
                               "dedup_ttl_s", "dead_letter_maxlen", "top_k", "block_ms",
                               "claim_idle_s", "claim_interval_s", "consumer_expiry_s",
                               "discovery_interval_s"),
                     non_negative=("drift_min_tokens", "grace_s"))
        if self.retention_s % self.bucket_s:
            raise ConfigError(f"monitor.retention_s={self.retention_s} must be a multiple of "
                              f"monitor.bucket_s={self.bucket_s}")
        if self.window_s > self.retention_s:
            raise ConfigError(f"monitor.window_s={self.window_s} exceeds "
                              f"monitor.retention_s={self.retention_s}")
        if not -1 <= self.port < 65536 or not -1 <= self.metrics_port < 65536:
            raise ConfigError(f"monitor.port={self.port} / metrics_port={self.metrics_port} "
                              "must be valid TCP ports (or -1)")
        if not self.redis_url:
            raise ConfigError("monitor.redis_url must not be empty")
        if not self.group:
            raise ConfigError("monitor.group must not be empty")

    @property
    def consumer(self) -> str:
        """The consumer name actually used."""
        return self.consumer_name or socket.gethostname()


def load_monitor_config(file: str | Path | None = None,
                        overrides: dict[str, Any] | None = None) -> MonitorConfig:
    """MonitorConfig from defaults < TOML [monitor] < FEATUREWATCH_MONITOR_* < overrides."""
    return load_config(MonitorConfig, file=file, table=TOML_TABLE, env_prefix=ENV_PREFIX,
                       overrides=overrides)
