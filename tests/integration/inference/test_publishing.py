"""Trace events on real Redis Streams: content, outages (drops counted), recovery, fail-closed."""

from __future__ import annotations

import asyncio

import grpc
import pytest
import redis.asyncio as aioredis
from fixtures_model import MLP_ID, RESID_ID
from inference_helpers import metric, wait_until

from featurewatch.contracts import DICTIONARIES_KEY, TRACE_FIELD, trace_stream_key
from featurewatch.v1 import inference_pb2 as pb
from featurewatch.v1 import trace_pb2

pytestmark = pytest.mark.integration
DROPPED = "featurewatch_inference_trace_events_dropped_total"
PUBLISHED = "featurewatch_inference_trace_events_published_total"


async def _generate(stub, request_id: str, n: int = 6, prompt: str = "The river carries"):
    request = pb.GenerateRequest(prompt=prompt, max_new_tokens=n, request_id=request_id,
                                 sampling=pb.SamplingOptions(temperature=0))
    return [r async for r in stub.Generate(request)]


async def _events(url: str, dictionary_id: str) -> list[trace_pb2.TraceEvent]:
    client = aioredis.Redis.from_url(url)
    try:
        entries = await client.xrange(trace_stream_key(dictionary_id))
    finally:
        await client.aclose()
    return [trace_pb2.TraceEvent.FromString(fields[TRACE_FIELD]) for _, fields in entries]


async def test_events_reach_the_stream(redis_server, make_server, connect):
    server = await make_server(redis_url=redis_server.url, chunk_tokens=5)
    stub = connect(server)
    replies = await _generate(stub, "req-1", n=12)
    prompt_tokens = replies[-1].summary.prompt_tokens
    await wait_until(lambda: metric(server, PUBLISHED, dictionary=RESID_ID) >= 1)
    await wait_until(lambda: server.publisher._queue.qsize() == 0)
    for dictionary_id, d_sae in ((MLP_ID, 256), (RESID_ID, 96)):
        events = await _events(redis_server.url, dictionary_id)
        assert {e.request_id for e in events} == {"req-1"}
        assert sum(e.token_count for e in events) == prompt_tokens + 12
        assert [e.chunk_index for e in events] == list(range(len(events))) and len(events) > 1
        assert events[-1].final_chunk and not any(e.final_chunk for e in events[:-1])
        for e in events:
            assert e.d_sae == d_sae and e.model_id == "fixture-1l" and e.prompt_text == ""
            assert len(e.feature_ids) == len(e.fire_counts) == len(e.max_activations)
            assert all(c <= e.token_count for c in e.fire_counts)
    client = aioredis.Redis.from_url(redis_server.url)
    assert await client.smembers(DICTIONARIES_KEY) == {MLP_ID.encode(), RESID_ID.encode()}
    await client.aclose()


async def test_prompt_text_only_when_opted_in(redis_server, make_server, connect):
    server = await make_server(redis_url=redis_server.url, publish_prompt_text=True)
    await _generate(connect(server), "req-text", prompt="Silver light")
    await wait_until(lambda: metric(server, PUBLISHED, dictionary=MLP_ID) >= 1)
    (event,) = await _events(redis_server.url, MLP_ID)
    assert event.prompt_text == "Silver light"


async def test_redis_outage_drops_are_counted_and_events_resume(redis_server, make_server,
                                                                connect):
    server = await make_server(redis_url=redis_server.url, trace_queue_size=2,
                               redis_backoff_s=0.05, redis_backoff_max_s=0.2,
                               redis_health_interval_s=0.1)
    stub = connect(server)
    await _generate(stub, "before")
    await wait_until(lambda: metric(server, PUBLISHED, dictionary=RESID_ID) == 1)
    assert metric(server, DROPPED, reason="queue_full") == 0

    redis_server.stop()
    for i in range(4):  # 8 events (2 dictionaries each): 1 held for retry + 2 queued
        replies = await _generate(stub, f"during-{i}")
        assert replies[-1].summary.generated_tokens == 6  # generation is unaffected
    await wait_until(lambda: metric(server, DROPPED, reason="queue_full") >= 5)
    assert metric(server, "featurewatch_inference_redis_up") == 0

    redis_server.start()
    await wait_until(lambda: server.publisher.available)
    await _generate(stub, "after")
    await wait_until(lambda: metric(server, PUBLISHED, dictionary=RESID_ID) >= 2)

    async def delivered() -> set[str]:
        return {e.request_id for e in await _events(redis_server.url, RESID_ID)}

    for _ in range(100):
        if "after" in await delivered():
            break
        await asyncio.sleep(0.1)
    assert {"before", "after"} <= await delivered()
    assert metric(server, "featurewatch_inference_redis_up") == 1


async def test_fail_closed_refuses_while_redis_is_down(redis_server, make_server, connect):
    server = await make_server(redis_url=redis_server.url, fail_closed=True,
                               redis_backoff_s=0.05, redis_health_interval_s=0.1)
    stub = connect(server)
    assert (await _generate(stub, "ok-1"))[-1].summary.generated_tokens == 6
    redis_server.stop()
    await wait_until(lambda: not server.publisher.available)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _generate(stub, "refused")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "fail_closed" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:  # bad input is still reported as such
        _ = [r async for r in stub.Generate(pb.GenerateRequest(prompt=""))]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    redis_server.start()
    await wait_until(lambda: server.publisher.available)
    assert (await _generate(stub, "ok-2"))[-1].summary.generated_tokens == 6
