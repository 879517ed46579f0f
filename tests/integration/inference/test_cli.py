"""The commands: `featurewatch serve inference`, `generate` and `bench inference`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import grpc
import pytest
from fixtures_model import MLP_ID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from servers import free_port

pytestmark = pytest.mark.integration
FEATUREWATCH = [sys.executable, "-c", "from featurewatch.cli import main; main()"]
ENV = {**os.environ, "COLUMNS": "200"}


async def _run(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *FEATUREWATCH, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


async def test_generate_json_and_rich(make_server):
    server = await make_server()
    code, out, err = await _run("generate", "The river carries", "--server", server.address,
                                "--max-new-tokens", "5", "--temperature", "0",
                                "--steer", f"{MLP_ID}:4=30", "--features", "2", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    tokens, summary = lines[:-1], lines[-1]["summary"]
    assert len(tokens) == 5 and summary["finish_reason"] == "FINISH_REASON_LENGTH"
    for token in tokens:
        top = token["features"][MLP_ID][0]
        assert top["feature"] == 4 and top["activation"] == 30.0
        assert top["label"]  # labels come from features.parquet via GetFeature
        assert len(token["features"][MLP_ID]) == 2

    code, out, err = await _run("generate", "The river carries", "--server", server.address,
                                "--max-new-tokens", "3", "--temperature", "0")
    assert code == 0, err
    assert "top features per token" in out and "FINISH_REASON_LENGTH: 3 tokens" in out


async def test_generate_reports_bad_input(make_server):
    server = await make_server()
    code, _, err = await _run("generate", "hi", "--server", server.address, "--top-p", "2")
    assert code == 1 and "INVALID_ARGUMENT: sampling.top_p" in err
    code, _, err = await _run("generate", "hi", "--steer", "seven=1")
    assert code == 2 and "--steer" in err


async def test_serve_refuses_a_mismatched_dictionary(tiny):
    code, _, err = await _run("serve", "inference", "--model", str(tiny.model_dir),
                              "--dictionary", str(tiny.other_bundle), "--port", "0",
                              "--metrics-port", "-1", "--redis-url", "")
    assert code == 2
    assert "error:" in err and "trained on another model" in err


async def test_serve_on_a_busy_port_is_a_clear_error(tiny):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag, field in (("--port", "inference.port"),
                            ("--metrics-port", "inference.metrics_port")):
            other = "--metrics-port" if flag == "--port" else "--port"
            code, _, err = await _run("serve", "inference", "--model", str(tiny.model_dir),
                                      "--dictionary", str(tiny.mlp_bundle), "--host",
                                      "127.0.0.1", flag, str(port), other, "0",
                                      "--redis-url", "")
            assert code == 2, err
            assert f"error: {field}={port}: cannot" in err and "Traceback" not in err


async def test_serve_until_sigterm(tiny):
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *FEATUREWATCH, "serve", "inference", "--model", str(tiny.model_dir),
        "--dictionary", str(tiny.mlp_bundle), "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", "-1", "--redis-url", "", stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=ENV)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            status = {"value": None}

            async def poll() -> None:
                while status["value"] != health_pb2.HealthCheckResponse.SERVING:
                    try:
                        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                        status["value"] = reply.status
                    except grpc.aio.AioRpcError:
                        await asyncio.sleep(0.2)

            await asyncio.wait_for(poll(), 60)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_bench_prints_the_figures(tiny):
    code, out, err = await _run("bench", "inference", "--model", str(tiny.model_dir),
                                "--dictionary", str(tiny.mlp_bundle), "--tokens", "6",
                                "--rounds", "2", "--streams", "1,2", "--json")
    assert code == 0, err
    result = json.loads(out)
    latency = result["latency"]
    # two rounds: the median of the per-round ratios is the mean of the smaller and larger
    assert 0 < latency["ratio_min"] <= latency["ratio"] <= latency["ratio_max"]
    assert latency["ratio"] == pytest.approx((latency["ratio_min"] + latency["ratio_max"]) / 2)
    assert latency["traced_s"] > 0 and latency["plain_s"] > 0
    assert set(result["tokens_per_second"]) == {"1", "2"}
    assert all(rate > 0 for rate in result["tokens_per_second"].values())

