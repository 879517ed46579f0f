"""Health, reflection, start-up refusal, cancellation, deadlines and admission control."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from inference_helpers import metric, wait_until

from featurewatch.errors import BundleError
from featurewatch.v1 import inference_pb2 as pb

pytestmark = pytest.mark.integration
SERVICE = "featurewatch.v1.InferenceService"
LONG = pb.GenerateRequest(prompt="The river carries", max_new_tokens=2000)


async def _health(server, service: str = SERVICE):
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def test_health_before_and_after_load(make_server, connect):
    server = await make_server(load=False)
    assert await _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _health(server, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    stub = connect(server)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "loading" in info.value.details()
    await server.load()
    assert await _health(server) == health_pb2.HealthCheckResponse.SERVING
    assert await _health(server, "") == health_pb2.HealthCheckResponse.SERVING
    assert metric(server, "featurewatch_inference_ready") == 1


async def test_reflection_lists_the_service(make_server):
    server = await make_server(load=False)
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE)
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]))]
        assert replies[0].file_descriptor_response.file_descriptor_proto


async def test_dictionary_of_another_model_is_refused_at_start(tiny, make_server):
    server = await make_server(load=False, dictionaries=(str(tiny.other_bundle),))
    with pytest.raises(BundleError, match="trained on another model"):
        await server.load()
    assert await _health(server) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_cancelled_stream_stops_generating(make_server, connect):
    server = await make_server()
    call = connect(server).Generate(LONG)
    for _ in range(3):
        await call.read()
    call.cancel()
    await wait_until(lambda: metric(server, "featurewatch_inference_requests_total",
                                     method="Generate", code="CANCELLED") == 1)
    await asyncio.sleep(0.1)
    steps = server.engine.steps
    await asyncio.sleep(0.3)
    assert server.engine.steps == steps < 1000
    assert metric(server, "featurewatch_inference_active_streams") == 0


async def test_deadline_stops_generating(make_server, connect):
    server = await make_server()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in connect(server).Generate(LONG, timeout=0.3):
            pass
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await wait_until(lambda: metric(server, "featurewatch_inference_active_streams") == 0)
    await wait_until(lambda: metric(server, "featurewatch_inference_requests_total",
                                    method="Generate", code="DEADLINE_EXCEEDED") == 1)
    await asyncio.sleep(0.1)
    steps = server.engine.steps
    await asyncio.sleep(0.3)
    assert server.engine.steps == steps < 1000


async def test_admission_control(make_server, connect):
    server = await make_server(max_concurrent_streams=2)
    stub = connect(server)
    calls = [stub.Generate(LONG) for _ in range(2)]
    for call in calls:
        assert (await call.read()).HasField("token")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(LONG):
            pass
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_concurrent_streams=2" in info.value.details()
    assert metric(server, "featurewatch_inference_requests_total", method="Generate",
                  code="RESOURCE_EXHAUSTED") == 1
    assert metric(server, "featurewatch_inference_active_streams") == 2
    for call in calls:
        call.cancel()
    await wait_until(lambda: metric(server, "featurewatch_inference_active_streams") == 0)
    replies = [r async for r in stub.Generate(pb.GenerateRequest(prompt="again",
                                                                 max_new_tokens=3))]
    assert replies[-1].summary.generated_tokens == 3
