"""What the inference and monitor services set up alike: the serve command's shared options and
logging, the standard gRPC services (health, reflection), and binding their ports."""

from __future__ import annotations

import logging

import click
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from featurewatch.errors import ConfigError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

log_level_option = click.option("--log-level", default="INFO", show_default=True,
                                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))


def config_file_option(table: str, config_class: str):
    """The `--config FILE.toml` option of a serve command whose config is `[table]`."""
    return click.option("--config", "config_file",
                        type=click.Path(exists=True, dir_okay=False),
                        help=f"TOML file; its [{table}] table sets any {config_class} field.")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)


def add_standard_services(server, health_servicer: health.HealthServicer,
                          service_name: str) -> None:
    """grpc.health.v1 and server reflection (for `service_name` and themselves) on `server`."""
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)


def bind_grpc(server, host: str, port: int, field: str) -> int:
    """Bind `server` (sync or aio) to host:port; the bound port, or ConfigError naming `field`."""
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:  # grpcio >= 1.5x raises where older releases returned 0
        bound = 0
    if bound == 0:
        raise ConfigError(f"{field}={port}: cannot bind {host}:{port} (port in use, or not an "
                          "address of this machine)")
    return bound


def start_metrics_server(registry: CollectorRegistry, host: str, port: int, field: str):
    """Serve `registry` on http://host:port/metrics; (server, bound port), or ConfigError."""
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"{field}={port}: cannot serve /metrics on {host}:{port} "
                          f"({exc.strerror or exc})") from None
    return server, int(server.server_port)
