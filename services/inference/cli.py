"""`featurewatch serve inference`: run the gRPC inference server until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

import click
from rich.console import Console

from featurewatch.services.inference.config import InferenceConfig, load_inference_config
from featurewatch.serving import config_file_option, log_level_option, setup_logging


@click.command("inference")
@config_file_option("inference", "InferenceConfig")
@click.option("--model", help="Local Hugging Face causal-LM directory to serve.")
@click.option("--dictionary", "dictionaries", multiple=True,
              help="Dictionary bundle directory bound to the model (repeat for several).")
@click.option("--host", help="Address to bind (gRPC and /metrics).")
@click.option("--port", type=int, help="gRPC port (0 = any free port).")
@click.option("--metrics-port", type=int, help="Prometheus /metrics port (-1 disables it).")
@click.option("--redis-url", help="Redis for trace events ('' disables publishing).")
@click.option("--fail-closed/--fail-open", default=None,
              help="Refuse Generate requests while trace events cannot reach Redis.")
@click.option("--publish-prompt-text/--no-publish-prompt-text", default=None,
              help="Include prompt text in trace events (off by default).")
@click.option("--max-concurrent-streams", type=int, help="Streams served at once.")
@click.option("--max-new-tokens", type=int, help="Most tokens one request may generate.")
@click.option("--max-batch-size", type=int, help="Streams decoded in one batched step.")
@click.option("--chunk-tokens", type=int, help="Tokens per trace event of long requests.")
@click.option("--torch-threads", type=int, help="torch threads (0 = torch's default).")
@log_level_option
def serve_inference(config_file, dictionaries, log_level, **flags) -> None:
    """Serve generation with per-token feature traces and steering over gRPC.

    Settings come from defaults < --config [inference] table < FEATUREWATCH_INFERENCE_*
    environment variables < these flags. The server reports NOT_SERVING on grpc.health.v1 until
    the model and every dictionary are loaded; a dictionary bound to another model stops it.
    """
    overrides = dict(flags, dictionaries=tuple(dictionaries) or None)
    cfg = load_inference_config(config_file, overrides)
    setup_logging(log_level)
    asyncio.run(_serve(cfg))


async def _serve(cfg: InferenceConfig) -> None:
    from featurewatch.services.inference.server import InferenceServer

    console = Console(stderr=True)
    server = InferenceServer(cfg)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        with console.status(f"loading {cfg.model} and {len(cfg.dictionaries)} dictionaries"):
            await server.load()
        console.print(f"[green]serving[/] gRPC on {server.address}, metrics on "
                      f":{server.metrics_port}/metrics — Ctrl-C stops")
        await stop.wait()
    finally:
        console.print("stopping (in-flight requests get "
                      f"{cfg.grace_s:g} s)")
        await server.stop()
