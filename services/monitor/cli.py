"""`featurewatch serve monitor`: ingest trace events and export /metrics until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading

import click
from rich.console import Console

from featurewatch.services.monitor.config import load_monitor_config
from featurewatch.serving import config_file_option, log_level_option, setup_logging


@click.command("monitor")
@config_file_option("monitor", "MonitorConfig")
@click.option("--redis-url", help="Redis with the trace streams and aggregates.")
@click.option("--dictionary", "dictionaries", multiple=True,
              type=click.Path(exists=True, file_okay=False),
              help="Dictionary bundle directory (cfg.json gives d_sae, metrics.json the "
                   "training densities for drift); repeat for several.")
@click.option("--flags", "flags_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML file with a 'flags:' list, upserted into Redis at start-up.")
@click.option("--host", help="Address the gRPC API and /metrics bind to.")
@click.option("--port", type=int, help="gRPC port of MonitorService (0 = any, -1 = off).")
@click.option("--metrics-port", type=int, help="Prometheus /metrics port (0 = any, -1 = off).")
@click.option("--group", help="Consumer group shared by the monitor replicas.")
@click.option("--consumer-name", help="This replica's consumer name, stable across restarts "
                                      "(default: the host name).")
@click.option("--batch-size", type=int, help="Stream entries applied per atomic Lua call.")
@click.option("--claim-idle-s", type=float,
              help="Take over entries pending this long on a crashed replica.")
@click.option("--bucket-s", type=int, help="Width of the time buckets (seconds).")
@click.option("--retention-s", type=int, help="How long buckets are kept (seconds).")
@click.option("--window-s", type=int, help="Window of the rates and drift in /metrics.")
@log_level_option
def serve_monitor(config_file, dictionaries, log_level, **flags) -> None:
    """Count feature firing from the trace streams in Redis; serve /metrics and the flag API.

    Settings come from defaults < --config [monitor] table < FEATUREWATCH_MONITOR_*
    environment variables < these flags. Every replica joins one consumer group; each
    event is counted exactly once, also across crashes (kill -9 included).
    """
    overrides = dict(flags, dictionaries=tuple(dictionaries) or None)
    cfg = load_monitor_config(config_file, overrides)
    setup_logging(log_level)
    from featurewatch.services.monitor.server import MonitorServer

    console = Console(stderr=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = MonitorServer(cfg)
    try:
        with console.status(f"connecting to {cfg.redis_url}"):
            server.start()
        console.print(f"[green]monitoring[/] as {cfg.consumer!r} in group {cfg.group!r}: "
                      f"gRPC on :{server.port}, metrics on :{server.metrics_port}/metrics "
                      "— Ctrl-C stops")
        while not stop.wait(1.0):
            pass
    finally:
        console.print("stopping (batches in flight finish)")
        server.stop()
