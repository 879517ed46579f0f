"""The grpc.aio inference server: service, health, reflection, /metrics and the trace publisher.

Start-up is two steps so probes tell the truth: `start()` listens at once and reports
NOT_SERVING; `load()` loads the model and dictionaries off the event loop and then reports
SERVING.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry

from featurewatch.services.inference.config import InferenceConfig
from featurewatch.services.inference.engine import Engine
from featurewatch.services.inference.publisher import TracePublisher
from featurewatch.services.inference.runtime import load_runtime, serving_spec
from featurewatch.services.inference.servicer import InferenceServicer, Serving
from featurewatch.services.inference.telemetry import InferenceMetrics
from featurewatch.serving import add_standard_services, bind_grpc, start_metrics_server
from featurewatch.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


class InferenceServer:
    """One inference server process (or one in-process server in tests)."""

    def __init__(self, cfg: InferenceConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = InferenceMetrics(self.registry)
        self.publisher: TracePublisher | None = None
        self.servicer = InferenceServicer(cfg, self.metrics, self._traces_deliverable)
        self.health = health.aio.HealthServicer()
        self.engine: Engine | None = None
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.metrics_port = 0
        self._metrics_http = None

    def _traces_deliverable(self) -> bool:
        return self.publisher is None or self.publisher.available

    @property
    def address(self) -> str:
        host = "127.0.0.1" if self.cfg.host in ("0.0.0.0", "::", "") else self.cfg.host
        return f"{host}:{self.port}"

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def start(self) -> None:
        """Listen for gRPC (NOT_SERVING until load()) and serve /metrics."""
        server = grpc.aio.server()
        inference_pb2_grpc.add_InferenceServiceServicer_to_server(self.servicer, server)
        add_standard_services(server, self.health, SERVICE_NAME)
        self.port = bind_grpc(server, self.cfg.host, self.cfg.port, "inference.port")
        if self.cfg.metrics_port >= 0:  # before serving: a busy port then leaves nothing behind
            self._metrics_http, self.metrics_port = start_metrics_server(
                self.registry, self.cfg.host, self.cfg.metrics_port, "inference.metrics_port")
        await self._set_health(NOT_SERVING)
        await server.start()
        self.server = server
        log.info("gRPC on %s, /metrics on port %s; loading model", self.address,
                 self.metrics_port)

    async def load(self) -> None:
        """Load model and dictionaries in a worker thread, start publishing, report SERVING."""
        runtime = await asyncio.get_running_loop().run_in_executor(None, load_runtime, self.cfg)
        publish = None
        if self.cfg.redis_url:
            self.publisher = TracePublisher(
                self.cfg.redis_url, self.metrics, runtime.dictionaries,
                queue_size=self.cfg.trace_queue_size, maxlen=self.cfg.stream_maxlen,
                backoff_s=self.cfg.redis_backoff_s, backoff_max_s=self.cfg.redis_backoff_max_s,
                health_interval_s=self.cfg.redis_health_interval_s)
            await self.publisher.start()
            publish = self.publisher.offer_threadsafe
        self.engine = Engine(runtime, max_batch_size=self.cfg.max_batch_size,
                             chunk_tokens=self.cfg.chunk_tokens, publish=publish,
                             publish_prompt_text=self.cfg.publish_prompt_text)
        self.engine.start()
        self.servicer.serving = Serving(runtime, serving_spec(runtime, self.cfg), self.engine)
        self.metrics.ready.set(1)
        await self._set_health(SERVING)
        log.info("serving %s with dictionaries %s", runtime.binding.model_id,
                 sorted(runtime.dictionaries))

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking requests, let in-flight ones finish for `grace` s, then release all."""
        await self._set_health(NOT_SERVING)
        self.metrics.ready.set(0)
        if self.server is not None:
            await self.server.stop(self.cfg.grace_s if grace is None else grace)
            self.server = None
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
            self.engine = None
        if self.publisher is not None:
            await self.publisher.stop()
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None

    async def wait(self) -> None:
        """Block until the gRPC server terminates."""
        if self.server is not None:
            await self.server.wait_for_termination()
