"""InferenceConfig: everything the inference service reads at start-up, and nothing later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurewatch.config import check_fields, load_config
from featurewatch.errors import ConfigError

ENV_PREFIX = "FEATUREWATCH_INFERENCE_"
TOML_TABLE = "inference"


@dataclass(frozen=True)
class InferenceConfig:
    """Model, dictionaries, limits, Redis publishing and telemetry of one inference server."""

    model: str = "artifacts/model"
    """Local Hugging Face causal-LM directory to serve."""
    dictionaries: tuple[str, ...] = ()
    """Dictionary bundle directories; each must be bound to `model`."""
    host: str = "0.0.0.0"
    """Address the gRPC and /metrics servers bind to."""
    port: int = 50051
    """gRPC port (0 = any free port)."""
    metrics_port: int = 9464
    """Port of the Prometheus /metrics HTTP server (0 = any free port, -1 = disabled)."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """Redis receiving trace events; empty disables publishing."""
    fail_closed: bool = False
    """Refuse Generate requests (UNAVAILABLE) while trace events cannot be delivered."""
    publish_prompt_text: bool = False
    """Include the prompt text in trace events (off: no text leaves the service)."""
    trace_queue_size: int = 1024
    """Trace events buffered while Redis is slow or down; beyond that they are dropped."""
    stream_maxlen: int = 100_000
    """Approximate length cap (XADD MAXLEN ~) of each dictionary's trace stream."""
    chunk_tokens: int = 256
    """A long request publishes one trace event per this many tokens."""
    redis_backoff_s: float = 0.1
    """First reconnect delay; doubles after each failure."""
    redis_backoff_max_s: float = 5.0
    """Longest reconnect delay."""
    redis_health_interval_s: float = 1.0
    """How often an idle publisher checks that Redis answers (drives fail-closed)."""
    max_concurrent_streams: int = 16
    """Generate streams served at once; more are refused with RESOURCE_EXHAUSTED."""
    max_batch_size: int = 16
    """Streams decoded together in one batched forward pass."""
    max_prompt_chars: int = 20_000
    """Longest prompt (characters) accepted before tokenizing."""
    max_prompt_tokens: int = 0
    """Longest prompt in tokens; 0 = the model's context length minus one."""
    max_new_tokens: int = 1024
    """Most tokens one request may generate."""
    default_new_tokens: int = 64
    """Tokens generated when a request leaves max_new_tokens at 0."""
    max_stop_strings: int = 8
    """Most stop strings per request."""
    torch_threads: int = 1
    """torch intra-op threads for the model (0 = torch's default). Decode-step matrices of small
    models are too small to split; extra threads mostly contend with the event loop."""
    grace_s: float = 5.0
    """Seconds in-flight requests get to finish on shutdown."""

    def __post_init__(self) -> None:
        check_fields(self, "inference",
                     positive=("trace_queue_size", "stream_maxlen", "chunk_tokens",
                               "max_concurrent_streams", "max_batch_size", "max_prompt_chars",
                               "max_new_tokens", "default_new_tokens", "redis_backoff_s",
                               "redis_backoff_max_s", "redis_health_interval_s"),
                     non_negative=("max_prompt_tokens", "max_stop_strings", "torch_threads",
                                   "grace_s"))
        if self.default_new_tokens > self.max_new_tokens:
            raise ConfigError(f"inference.default_new_tokens={self.default_new_tokens} exceeds "
                              f"inference.max_new_tokens={self.max_new_tokens}")
        if not 0 <= self.port < 65536 or not -1 <= self.metrics_port < 65536:
            raise ConfigError(f"inference.port={self.port} / metrics_port={self.metrics_port} "
                              "must be valid TCP ports")
        if self.fail_closed and not self.redis_url:
            raise ConfigError("inference.fail_closed=true needs inference.redis_url")


def load_inference_config(file: str | Path | None = None,
                          overrides: dict[str, Any] | None = None) -> InferenceConfig:
    """InferenceConfig from defaults < TOML [inference] < FEATUREWATCH_INFERENCE_* < overrides."""
    return load_config(InferenceConfig, file=file, table=TOML_TABLE, env_prefix=ENV_PREFIX,
                       overrides=overrides)
