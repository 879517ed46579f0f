"""Port binding and the /metrics server shared by both services: a busy port is a ConfigError
that names the field, never a traceback."""

from __future__ import annotations

import socket
from concurrent import futures
from urllib.request import urlopen

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, Counter

from featurewatch.errors import ConfigError
from featurewatch.serving import add_standard_services, bind_grpc, start_metrics_server


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def grpc_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    yield server
    server.stop(None)


def test_bind_grpc_returns_the_bound_port_and_serves_health(grpc_server):
    servicer = health.HealthServicer()
    add_standard_services(grpc_server, servicer, "featurewatch.v1.TestService")
    port = bind_grpc(grpc_server, "127.0.0.1", 0, "test.port")
    assert port > 0
    grpc_server.start()
    servicer.set("featurewatch.v1.TestService", health_pb2.HealthCheckResponse.SERVING)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="featurewatch.v1.TestService"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_bind_grpc_on_a_busy_port_names_the_field(grpc_server, busy_port):
    with pytest.raises(ConfigError) as err:
        bind_grpc(grpc_server, "127.0.0.1", busy_port, "inference.port")
    assert str(err.value).startswith(f"inference.port={busy_port}: cannot bind 127.0.0.1:")


def test_metrics_server_serves_the_registry_and_refuses_a_busy_port(busy_port):
    registry = CollectorRegistry()
    Counter("demo_events", "Events.", registry=registry).inc(3)
    server, port = start_metrics_server(registry, "127.0.0.1", 0, "monitor.metrics_port")
    try:
        body = urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "demo_events_total 3.0" in body
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match=rf"^monitor.metrics_port={busy_port}: cannot serve"):
        start_metrics_server(registry, "127.0.0.1", busy_port, "monitor.metrics_port")
