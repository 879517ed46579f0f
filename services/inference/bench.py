"""`featurewatch bench inference`: the cost of the feature trace and the gain from batching.

One in-process server, measured through its gRPC API in one run:
- per-token latency (mean gap between streamed tokens) of one stream with the trace (every
  non-zero feature of every dictionary, plus trace events when --redis-url is given) vs without
  (`trace.disabled`), each round running the two back to back; the goal is a median per-round
  ratio ≤ 1.10×;
- aggregate tokens/s with 1, 4 and 16 concurrent traced streams.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import click
import grpc
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from featurewatch.errors import ConfigError
from featurewatch.services.inference.config import InferenceConfig
from featurewatch.v1 import inference_pb2 as pb
from featurewatch.v1 import inference_pb2_grpc

GOAL = 1.10


def _request(prompt: str, tokens: int, traced: bool, seed: int) -> pb.GenerateRequest:
    trace = pb.TraceOptions() if traced else pb.TraceOptions(disabled=True)
    return pb.GenerateRequest(prompt=prompt, max_new_tokens=tokens, trace=trace,
                              sampling=pb.SamplingOptions(temperature=1.0, seed=seed))


async def _stream(stub, request: pb.GenerateRequest) -> list[float]:
    """Arrival times of the generated tokens of one stream."""
    arrivals = []
    async for reply in stub.Generate(request):
        if reply.HasField("token"):
            arrivals.append(time.perf_counter())
    return arrivals


def _per_token(arrivals: list[float]) -> float:
    if len(arrivals) < 2:
        raise click.ClickException("a stream ended after one token; use a longer --tokens")
    return (arrivals[-1] - arrivals[0]) / (len(arrivals) - 1)


async def _latency(stub, prompt: str, tokens: int, rounds: int, progress) -> dict[str, float]:
    task = progress.add_task("per-token latency", total=2 * rounds)
    samples: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for traced in ((True, False) if r % 2 == 0 else (False, True)):
            samples[traced].append(_per_token(await _stream(stub, _request(prompt, tokens,
                                                                            traced, r))))
            progress.advance(task)
    # a ratio per round, of two runs back to back: slow drifts of a shared machine cancel
    ratios = [t / p for t, p in zip(samples[True], samples[False], strict=True)]
    return {"traced_s": statistics.median(samples[True]),
            "plain_s": statistics.median(samples[False]), "ratio": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios)}


async def _throughput(stub, prompt: str, tokens: int, streams: int, rounds: int) -> float:
    rates = []
    for r in range(rounds):
        start = time.perf_counter()
        results = await asyncio.gather(*(_stream(stub, _request(prompt, tokens, True,
                                                                 1000 * r + i))
                                         for i in range(streams)))
        rates.append(sum(len(a) for a in results) / (time.perf_counter() - start))
    return statistics.median(rates)


async def run_bench(cfg: InferenceConfig, prompt: str, tokens: int, rounds: int,
                    streams: list[int], console: Console) -> dict:
    """Start a server from `cfg`, measure, stop it; the figures as a dict."""
    from featurewatch.services.inference.server import InferenceServer

    server = InferenceServer(cfg)
    await server.start()
    try:
        with console.status("loading model and dictionaries"):
            await server.load()
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            for traced in (True, False):  # warm-up
                await _stream(stub, _request(prompt, tokens, traced, 0))
            with Progress(console=console, transient=True) as progress:
                latency = await _latency(stub, prompt, tokens, rounds, progress)
                task = progress.add_task("tokens/s", total=len(streams))
                rates = {}
                for n in streams:
                    rates[n] = await _throughput(stub, prompt, tokens, n, max(1, rounds // 2))
                    progress.advance(task)
        published = sum(s.value for m in server.metrics.trace_events_published.collect()
                        for s in m.samples if s.name.endswith("_total"))
    finally:
        await server.stop(grace=0)
    return {"tokens_per_stream": tokens, "rounds": rounds, "latency": latency,
            "tokens_per_second": rates, "trace_events_published": published,
            "dictionaries": list(cfg.dictionaries), "model": cfg.model}


def _print(result: dict, console: Console) -> None:
    lat = result["latency"]
    table = Table(title=f"inference benchmark ({result['tokens_per_stream']} tokens per stream)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("per-token latency, with trace", f"{lat['traced_s'] * 1e3:.3f} ms")
    table.add_row("per-token latency, without trace", f"{lat['plain_s'] * 1e3:.3f} ms")
    verdict = "met" if lat["ratio"] <= GOAL else "NOT met"
    table.add_row("ratio with / without (median of rounds)",
                  f"{lat['ratio']:.3f}× (goal ≤ {GOAL:.2f}×: {verdict})")
    table.add_row("ratio range over rounds", f"{lat['ratio_min']:.3f}–{lat['ratio_max']:.3f}×")
    base = result["tokens_per_second"][min(result["tokens_per_second"])]
    for n, rate in result["tokens_per_second"].items():
        table.add_row(f"tokens/s, {n} concurrent stream(s)", f"{rate:,.0f} ({rate / base:.2f}×)")
    table.add_row("trace events published", f"{result['trace_events_published']:.0f}")
    console.print(table)


def _default_dictionaries(artifacts: Path) -> tuple[str, ...]:
    found = sorted(str(p.parent) for p in (artifacts / "dictionaries").glob("*/cfg.json"))
    if not found:
        raise ConfigError(f"no dictionary bundles under {artifacts / 'dictionaries'}; pass "
                          "--dictionary DIR or train with `featurewatch train all`")
    return tuple(found)


@click.command("inference")
@click.option("--artifacts", type=click.Path(path_type=Path), default=Path("artifacts"),
              show_default=True, help="Where --model and --dictionary default from.")
@click.option("--model", help="Model directory (default: ARTIFACTS/model).")
@click.option("--dictionary", "dictionaries", multiple=True,
              help="Bundle directory (repeatable; default: every bundle in ARTIFACTS).")
@click.option("--prompt", default="The history of the", show_default=True)
@click.option("--tokens", type=click.IntRange(2, 4096), default=64, show_default=True,
              help="Tokens generated per stream.")
@click.option("--rounds", type=click.IntRange(1, 100), default=12, show_default=True,
              help="Latency rounds per mode (throughput uses half as many).")
@click.option("--streams", default="1,4,16", show_default=True,
              help="Concurrent stream counts for tokens/s.")
@click.option("--redis-url", default="", help="Publish trace events here while measuring.")
@click.option("--torch-threads", type=int, default=1, show_default=True,
              help="torch threads for the model (0 = torch's default).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_inference(artifacts: Path, model, dictionaries, prompt, tokens, rounds, streams,
                    redis_url, torch_threads, as_json) -> None:
    """Per-token latency with vs without the trace, and tokens/s at 1/4/16 streams."""
    try:
        counts = sorted({int(s) for s in streams.split(",") if s.strip()})
    except ValueError:
        raise click.BadParameter(f"{streams!r} is not a comma-separated list of integers",
                                 param_hint="--streams") from None
    if not counts or counts[0] < 1:
        raise click.BadParameter("stream counts must be ≥ 1", param_hint="--streams")
    cfg = InferenceConfig(
        model=model or str(artifacts / "model"),
        dictionaries=tuple(dictionaries) or _default_dictionaries(artifacts),
        host="127.0.0.1", port=0, metrics_port=-1, redis_url=redis_url,
        max_concurrent_streams=max(counts), max_batch_size=max(counts),
        max_new_tokens=max(tokens, 64), torch_threads=torch_threads)
    console = Console(stderr=as_json)
    result = asyncio.run(run_bench(cfg, prompt, tokens, rounds, counts, console))
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        _print(result, console)
