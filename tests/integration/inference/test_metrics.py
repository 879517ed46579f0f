"""/metrics over HTTP: valid for promtool, and the numbers match the traffic."""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request

import grpc
import pytest
from servers import require_binary

from featurewatch.v1 import inference_pb2 as pb

pytestmark = pytest.mark.integration


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def _sample(body: str, line_start: str) -> float:
    return float(next(line for line in body.splitlines()
                      if line.startswith(line_start)).rsplit(" ", 1)[1])


async def test_live_metrics_pass_promtool_and_count_traffic(redis_server, make_server, connect):
    server = await make_server(redis_url=redis_server.url)
    stub = connect(server)
    for n in (3, 5):
        _ = [r async for r in stub.Generate(pb.GenerateRequest(prompt="The river",
                                                               max_new_tokens=n))]
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetFeature(pb.GetFeatureRequest(dictionary="fx-mlp", feature=999))
    body = await asyncio.to_thread(_scrape, server.metrics_port)
    check = subprocess.run([require_binary("promtool"), "check", "metrics"], input=body,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "" and check.stderr.strip() == ""  # no lint findings
    assert _sample(body, 'featurewatch_inference_requests_total{code="OK",method="Generate"}') == 2
    assert _sample(body, 'featurewatch_inference_requests_total{code="OUT_OF_RANGE",'
                         'method="GetFeature"}') == 1
    assert _sample(body, "featurewatch_inference_tokens_generated_total") == 8
    assert _sample(body, "featurewatch_inference_time_to_first_token_seconds_count") == 2
    assert _sample(body, "featurewatch_inference_inter_token_latency_seconds_count") == 6
    assert _sample(body, "featurewatch_inference_active_streams") == 0
    assert _sample(body, 'featurewatch_inference_trace_events_dropped_total{reason="queue_full"}'
                   ) == 0
    for name in ("featurewatch_inference_trace_events_published_total",
                 "featurewatch_inference_redis_up", "featurewatch_inference_ready",
                 "featurewatch_inference_prompt_tokens_total",
                 "featurewatch_inference_trace_queue_events"):
        assert f"\n{name}" in body
