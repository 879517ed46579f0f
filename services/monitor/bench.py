"""`featurewatch bench monitor`: ingest throughput against Redis' own HINCRBY rate.

Both figures come from one run on one private redis-server: `redis-benchmark` measures
pipelined HINCRBY (the cheapest write an aggregate needs per feature), then the real ingest
path (StreamWorker → apply.lua, exactly-once bookkeeping included) consumes pre-published
trace events. The ratio of feature increments/s to HINCRBY/s is the figure of merit.

With `--alert-latency ARTIFACTS` it also times prompt → alert: `featurewatch up
--exit-after-demo` (a subprocess, so this module stays free of torch) runs the whole stack on
free ports and records when Alertmanager delivered the flagged feature's alert.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import redis
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from featurewatch.contracts import TRACE_FIELD, trace_stream_key
from featurewatch.errors import ConfigError
from featurewatch.services.monitor.aggregates import BucketLayout
from featurewatch.services.monitor.applier import Applier
from featurewatch.services.monitor.dictionaries import DictionaryInfo, DictionaryRegistry
from featurewatch.services.monitor.ingest import StreamWorker
from featurewatch.stack import featurewatch_argv, find_binary, free_port, redis_process
from featurewatch.v1 import trace_pb2

DICTIONARY_ID = "bench"


@dataclass(frozen=True)
class BenchResult:
    hincrby_per_s: float
    increments_per_s: float
    events_per_s: float
    events: int
    increments: int
    redis_busy_fraction: float
    """Share of the ingest wall time Redis spent executing the script (INFO commandstats)."""

    @property
    def ratio(self) -> float:
        return self.increments_per_s / self.hincrby_per_s


def redis_benchmark_hincrby(port: int, requests: int, clients: int, pipeline: int,
                            d_sae: int) -> float:
    """Pipelined HINCRBY requests/s on random fields of one hash, as redis-benchmark reports."""
    binary = find_binary("redis-benchmark")
    if binary is None:
        raise ConfigError("redis-benchmark is not installed (apt-get install redis-tools)")
    argv = [binary, "-h", "127.0.0.1", "-p", str(port), "-n", str(requests), "-P", str(pipeline),
            "-c", str(clients), "-r", str(d_sae), "--csv", "HINCRBY", "bench:{h}",
            "__rand_int__", "1"]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1])


def best_hincrby(port: int, requests: int, pipeline: int, d_sae: int) -> float:
    """The best of a shallow-many-clients and a deep-one-client pipeline (Redis' ceiling)."""
    return max(redis_benchmark_hincrby(port, requests, 16, pipeline, d_sae),
               redis_benchmark_hincrby(port, requests, 1, 1000, d_sae))


def make_events(n: int, features: int, d_sae: int, tokens: int, seed: int = 0) -> list[bytes]:
    """Serialized TraceEvents with Zipf-like feature popularity, as real traffic has."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, d_sae + 1) ** 0.8
    weights /= weights.sum()
    now = time.time_ns()
    payloads = []
    for i in range(n):
        ids = np.sort(rng.choice(d_sae, size=features, replace=False, p=weights))
        event = trace_pb2.TraceEvent(
            request_id=f"bench-{i}", dictionary_id=DICTIONARY_ID, token_count=tokens,
            feature_ids=ids.tolist(),
            fire_counts=rng.integers(1, tokens + 1, size=features).tolist(),
            max_activations=rng.gamma(2.0, 1.0, size=features).astype(np.float32).tolist(),
            d_sae=d_sae)
        event.time.FromNanoseconds(now)
        payloads.append(event.SerializeToString())
    return payloads


def _publish(client: redis.Redis, payloads: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for payload in payloads:
        pipe.xadd(trace_stream_key(DICTIONARY_ID), {TRACE_FIELD: payload})
    pipe.execute()


def _script_usec(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    return sum(v["usec"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def ingest_rate(client: redis.Redis, payloads: list[bytes], d_sae: int, batch_size: int,
                console: Console) -> tuple[float, int, float, float]:
    """(seconds, increments, redis busy fraction, events) for consuming every payload."""
    layout = BucketLayout(10, 3600)
    registry = DictionaryRegistry(client, [DictionaryInfo(DICTIONARY_ID, d_sae)])
    applier = Applier(client, layout, group="bench", consumer="bench-1", dedup_ttl_s=3600,
                      dead_letter_maxlen=1000)
    worker = StreamWorker(client, applier, registry, layout, DICTIONARY_ID, group="bench",
                          consumer="bench-1", batch_size=batch_size)
    worker.ensure_group()
    _publish(client, payloads)
    usec0 = _script_usec(client)
    increments = events = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("ingesting", total=len(payloads))
        start = time.perf_counter()
        while events < len(payloads):
            result = worker.poll(None)
            increments += result.increments
            events += result.entries
            progress.update(task, completed=events)
        seconds = time.perf_counter() - start
    busy = (_script_usec(client) - usec0) / 1e6 / seconds
    return seconds, increments, busy, events


def run_bench(events: int, features: int, d_sae: int, tokens: int, batch_size: int,
              requests: int, pipeline: int, console: Console) -> BenchResult:
    """Start a private redis-server, measure both rates, stop it."""
    workdir = Path(tempfile.mkdtemp(prefix="featurewatch-bench-"))
    port = free_port()
    server = redis_process(workdir, port)
    try:
        server.start(timeout=20)
        client = redis.Redis(port=port, socket_timeout=60)
        # The baseline is taken before and after the ingest and the better one kept, so a
        # burst of other load on the machine cannot flatter the ratio.
        with console.status("redis-benchmark: pipelined HINCRBY"):
            before = best_hincrby(port, requests, pipeline, d_sae)
        with console.status(f"building {events} trace events"):
            payloads = make_events(events, features, d_sae, tokens)
        seconds, increments, busy, done = ingest_rate(client, payloads, d_sae, batch_size,
                                                      console)
        with console.status("redis-benchmark again"):
            hincrby = max(before, best_hincrby(port, requests, pipeline, d_sae))
        client.close()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return BenchResult(hincrby, increments / seconds, done / seconds, done, increments, busy)


UP_PORT_FLAGS = ("--redis-port", "--grpc-port", "--inference-metrics-port", "--monitor-port",
                 "--monitor-metrics-port", "--prometheus-port", "--alertmanager-port")


def require_trained(artifacts: Path) -> None:
    """`up` trains whatever is missing; a benchmark must not start a training run by surprise."""
    from featurewatch.up_stack import find_artifacts  # the test `up` itself uses

    if find_artifacts(artifacts) is None:
        raise ConfigError(f"--alert-latency {artifacts}: no trained model/ and dictionaries/ "
                          "there; run `featurewatch train all` first")


def alert_latency(artifacts: Path, alert_for: str, timeout_s: float) -> dict:
    """Seconds from the first and the last demo prompt to the delivered alert (via `up`)."""
    require_trained(artifacts)
    with tempfile.TemporaryDirectory(prefix="fw-bench-alert-") as tmp:
        run_dir = Path(tmp) / "run"
        ports = [arg for flag in UP_PORT_FLAGS for arg in (flag, "0")]
        argv = featurewatch_argv("up", "--artifacts", str(artifacts), "--run-dir", str(run_dir),
                                 "--alert-for", alert_for, "--exit-after-demo",
                                 "--timeout", str(timeout_s), *ports)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s + 600)
        state_file = run_dir / "up.json"
        state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    alert = state.get("alert")
    if done.returncode != 0 or not alert:
        tail = (done.stderr or done.stdout)[-800:]
        raise ConfigError(f"--alert-latency {artifacts}: `featurewatch up` delivered no alert "
                          f"(exit {done.returncode}): {tail}")
    return {"for": alert_for, "via": alert["via"],
            "from_first_prompt_s": alert["latency_from_first_prompt_s"],
            "from_last_prompt_s": alert["latency_from_last_prompt_s"]}


@click.command("monitor")
@click.option("--events", default=4000, show_default=True, help="Trace events to ingest.")
@click.option("--features", default=256, show_default=True,
              help="Distinct features per event (a 64-token request fires a few hundred).")
@click.option("--d-sae", default=4096, show_default=True, help="Dictionary size.")
@click.option("--tokens", default=64, show_default=True, help="Tokens per event.")
@click.option("--batch-size", default=128, show_default=True, help="Entries per Lua call.")
@click.option("--requests", default=2_000_000, show_default=True,
              help="HINCRBY requests redis-benchmark sends.")
@click.option("--pipeline", default=64, show_default=True,
              help="redis-benchmark -P with 16 clients (one client at -P 1000 is also run).")
@click.option("--alert-latency", "alert_artifacts",
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Also time prompt → delivered alert with `featurewatch up` on these "
                   "trained artifacts (needs prometheus and alertmanager).")
@click.option("--alert-for", default="0s", show_default=True,
              help="`for:` of the flagged-feature rule in the latency run.")
def bench_monitor(events, features, d_sae, tokens, batch_size, requests, pipeline,
                  alert_artifacts, alert_for) -> None:
    """Ingested feature increments/s vs redis-benchmark's pipelined HINCRBY/s (goal >= 50%),
    and optionally the latency from a prompt to its alert."""
    if not 0 < features <= d_sae:
        raise click.BadParameter(f"must be in 1..d_sae={d_sae}", param_hint="--features")
    if alert_artifacts is not None:  # before minutes of ingest work, not after
        require_trained(alert_artifacts)
    console = Console()
    r = run_bench(events, features, d_sae, tokens, batch_size, requests, pipeline, console)
    latency = None
    if alert_artifacts is not None:
        with console.status("timing prompt → alert with `featurewatch up`"):
            latency = alert_latency(alert_artifacts, alert_for, timeout_s=180.0)
    table = Table(title="featurewatch bench monitor (one redis-server, one run)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("redis-benchmark HINCRBY (best)", f"{r.hincrby_per_s:,.0f} /s")
    table.add_row("ingest feature increments", f"{r.increments_per_s:,.0f} /s")
    table.add_row("ingest events", f"{r.events_per_s:,.0f} /s ({r.events} events)")
    table.add_row("Redis busy in apply.lua", f"{r.redis_busy_fraction:.0%} of ingest time")
    table.add_row("ratio (goal >= 50%)", f"{r.ratio:.0%}")
    if latency is not None:
        table.add_row(f"alert latency from first prompt (for: {alert_for})",
                      f"{latency['from_first_prompt_s']:.1f} s")
        table.add_row("alert latency from last prompt", f"{latency['from_last_prompt_s']:.1f} s")
    console.print(table)
