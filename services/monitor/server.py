"""One monitor replica: stream workers per dictionary, the gRPC API, health and /metrics.

Start-up reads the bundles and the flags file once, then a supervisor thread discovers new
dictionaries (featurewatch:dictionaries), starts a StreamWorker thread for each, restarts any
that died, and keeps the readiness status in step with Redis reachability.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import redis
from grpc_health.v1 import health, health_pb2
from prometheus_client import CollectorRegistry

from featurewatch.errors import ConfigError
from featurewatch.services.monitor.aggregates import AggregateReader, BucketLayout
from featurewatch.services.monitor.api import MonitorServicer
from featurewatch.services.monitor.applier import Applier
from featurewatch.services.monitor.config import MonitorConfig
from featurewatch.services.monitor.dictionaries import DictionaryRegistry, read_bundle_info
from featurewatch.services.monitor.flags import FlagStore
from featurewatch.services.monitor.ingest import REDIS_ERRORS, StreamWorker, WorkerStats
from featurewatch.services.monitor.metrics import MetricsOptions, MonitorCollector
from featurewatch.serving import add_standard_services, bind_grpc, start_metrics_server
from featurewatch.v1 import monitor_pb2, monitor_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = monitor_pb2.DESCRIPTOR.services_by_name["MonitorService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def connect(url: str, block_ms: int, wait_s: float = 30.0) -> redis.Redis:
    """A client whose socket timeout outlasts blocking reads; waits up to wait_s for Redis."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2.0,
                                  socket_timeout=block_ms / 1000 + 5.0, health_check_interval=30)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.ping()
            return client
        except REDIS_ERRORS as exc:
            if time.monotonic() >= deadline:
                raise ConfigError(f"monitor.redis_url={url}: Redis does not answer ({exc})") \
                    from None
            time.sleep(0.5)


class MonitorServer:
    """Start with start(), stop with stop(); ports 0 are resolved into .port / .metrics_port."""

    def __init__(self, cfg: MonitorConfig, registry: CollectorRegistry | None = None,
                 redis_wait_s: float = 30.0) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        self.redis_wait_s = redis_wait_s
        self.layout = BucketLayout(cfg.bucket_s, cfg.retention_s)
        self.stats = WorkerStats()
        self.stop_event = threading.Event()
        self.workers: dict[str, tuple[StreamWorker, threading.Thread]] = {}
        self.health = health.HealthServicer()
        self.port = 0
        self.metrics_port = 0
        self._grpc: grpc.Server | None = None
        self._http = None
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        """Read bundles and flags, then serve; raises ConfigError/BundleError/FlagError."""
        cfg = self.cfg
        bundles = [read_bundle_info(path) for path in cfg.dictionaries]
        self.client = connect(cfg.redis_url, cfg.block_ms, self.redis_wait_s)
        self.dictionaries = DictionaryRegistry(self.client, bundles)
        self.dictionaries.publish()
        self.flags = FlagStore(self.client, self.dictionaries)
        if cfg.flags_file:
            loaded = self.flags.load_file(cfg.flags_file)
            log.info("loaded %d flags from %s", len(loaded), cfg.flags_file)
        self.reader = AggregateReader(self.client, self.layout)
        self.applier = Applier(self.client, self.layout, group=cfg.group, consumer=cfg.consumer,
                               dedup_ttl_s=cfg.dedup_ttl_s,
                               dead_letter_maxlen=cfg.dead_letter_maxlen)
        options = MetricsOptions(cfg.group, cfg.window_s, cfg.top_k, cfg.drift_min_tokens)
        MonitorCollector(self.client, self.dictionaries, self.reader, self.flags, options,
                         self.stats, self._live_workers).register(self.registry)
        if cfg.metrics_port >= 0:
            self._http, self.metrics_port = start_metrics_server(
                self.registry, cfg.host, cfg.metrics_port, "monitor.metrics_port")
        if cfg.port >= 0:
            self._start_grpc()
        self._supervise_once()
        self._supervisor = threading.Thread(target=self._supervise, name="monitor-supervisor",
                                            daemon=True)
        self._supervisor.start()
        log.info("monitor %s in group %s: gRPC port %s, /metrics port %s", cfg.consumer,
                 cfg.group, self.port, self.metrics_port)

    def _start_grpc(self) -> None:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        servicer = MonitorServicer(self.flags, self.reader, self.dictionaries, self.cfg.window_s)
        monitor_pb2_grpc.add_MonitorServiceServicer_to_server(servicer, server)
        add_standard_services(server, self.health, SERVICE_NAME)
        self.port = bind_grpc(server, self.cfg.host, self.cfg.port, "monitor.port")
        server.start()
        self._grpc = server
        self.health.set("", SERVING)  # liveness: the process answers
        self.health.set(SERVICE_NAME, SERVING)

    def _live_workers(self) -> int:
        return sum(1 for _, thread in self.workers.values() if thread.is_alive())

    def _start_worker(self, dictionary_id: str) -> None:
        cfg = self.cfg
        worker = StreamWorker(self.client, self.applier, self.dictionaries, self.layout,
                              dictionary_id, group=cfg.group, consumer=cfg.consumer,
                              batch_size=cfg.batch_size, claim_idle_s=cfg.claim_idle_s,
                              consumer_expiry_s=cfg.consumer_expiry_s, stats=self.stats)
        thread = threading.Thread(
            target=worker.run, args=(self.stop_event,), name=f"stream-{dictionary_id}",
            kwargs={"block_ms": cfg.block_ms, "claim_interval_s": cfg.claim_interval_s},
            daemon=True)
        self.workers[dictionary_id] = (worker, thread)
        thread.start()

    def _supervise_once(self) -> None:
        try:
            self.client.ping()
            ids = self.dictionaries.ids()
            ready = True
        except REDIS_ERRORS as exc:
            log.warning("redis unreachable: %s", exc)
            ids, ready = [], False
        self.health.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)
        for dictionary_id in ids:
            entry = self.workers.get(dictionary_id)
            if entry is None or not entry[1].is_alive():
                if entry is not None:
                    log.error("stream worker of %s died; restarting it", dictionary_id)
                self._start_worker(dictionary_id)

    def _supervise(self) -> None:
        while not self.stop_event.wait(self.cfg.discovery_interval_s):
            self._supervise_once()

    def stop(self) -> None:
        """Finish the batches in flight (each is atomic anyway), then close everything."""
        self.stop_event.set()
        self.health.set(SERVICE_NAME, NOT_SERVING)
        deadline = time.monotonic() + self.cfg.grace_s + self.cfg.block_ms / 1000
        for _, thread in self.workers.values():
            thread.join(max(deadline - time.monotonic(), 0.0))
        if self._supervisor is not None:
            self._supervisor.join(1.0)
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait()
            self._grpc = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if hasattr(self, "client"):
            self.client.close()
