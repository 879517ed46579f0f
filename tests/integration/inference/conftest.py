"""Fixtures: real in-process grpc.aio inference servers over the tiny model (+ redis_server)."""

from __future__ import annotations

import grpc
import pytest
import torch
from fixtures_model import shared_tiny_artifacts
from inference_helpers import tiny_config

from featurewatch.services.inference.server import InferenceServer
from featurewatch.v1 import inference_pb2_grpc


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return shared_tiny_artifacts(tmp_path_factory)


@pytest.fixture
async def make_server(tiny):
    """`await make_server(load=True, **config_overrides)` → a started InferenceServer."""
    servers: list[InferenceServer] = []

    async def make(load: bool = True, **overrides) -> InferenceServer:
        server = InferenceServer(tiny_config(tiny, **overrides))
        await server.start()
        servers.append(server)
        if load:
            await server.load()
        return server

    yield make
    for server in servers:
        await server.stop(grace=0)


@pytest.fixture
async def connect():
    """`connect(server)` → InferenceService stub on a channel closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def make(server: InferenceServer) -> inference_pb2_grpc.InferenceServiceStub:
        channel = grpc.aio.insecure_channel(server.address)
        channels.append(channel)
        return inference_pb2_grpc.InferenceServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()
