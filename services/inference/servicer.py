"""The gRPC servicer: protobuf in → domain objects → engine → protobuf out.

`status_for` is the one place errors become gRPC status codes; user input can only ever produce
INVALID_ARGUMENT or OUT_OF_RANGE (InvalidRequest), never INTERNAL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import grpc

from featurewatch.errors import InvalidRequest
from featurewatch.services.inference import convert
from featurewatch.services.inference.config import InferenceConfig
from featurewatch.services.inference.domain import ServingSpec, TokenOut
from featurewatch.services.inference.engine import Engine
from featurewatch.services.inference.runtime import Runtime
from featurewatch.services.inference.streams import EngineClosed, Expired
from featurewatch.services.inference.telemetry import InferenceMetrics, StreamTimer
from featurewatch.services.inference.validation import (
    check_feature,
    next_page_token,
    resolve_dictionary,
    validate_generate,
    validate_list,
    validate_trace,
)
from featurewatch.v1 import inference_pb2 as pb
from featurewatch.v1 import inference_pb2_grpc

log = logging.getLogger(__name__)


class Overloaded(Exception):
    """Admission control refused a stream."""


class Unavailable(Exception):
    """The service cannot take requests right now (loading, or traces undeliverable)."""


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status (code, message) of an exception raised while serving a request."""
    if isinstance(exc, InvalidRequest):
        code = grpc.StatusCode.OUT_OF_RANGE if exc.out_of_range else grpc.StatusCode.INVALID_ARGUMENT
        return code, str(exc)
    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, Unavailable | EngineClosed):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, Expired):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (logged by the server)"


@dataclass
class Serving:
    """What exists once loading finished."""

    runtime: Runtime
    spec: ServingSpec
    engine: Engine


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """featurewatch.v1.InferenceService over an Engine."""

    def __init__(self, cfg: InferenceConfig, metrics: InferenceMetrics,
                 traces_deliverable: Callable[[], bool] = lambda: True) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.traces_deliverable = traces_deliverable
        self.serving: Serving | None = None
        self.active_streams = 0

    def _ready(self) -> Serving:
        if self.serving is None:
            raise Unavailable("the model and dictionaries are still loading; retry shortly")
        return self.serving

    @asynccontextmanager
    async def _rpc(self, method: str, context: grpc.aio.ServicerContext):
        """Map errors to a status and count every finished RPC by its code (before the status
        is sent, so a client never sees a status the metrics do not show yet)."""
        code: grpc.StatusCode | None = grpc.StatusCode.OK
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0
            code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            status, message = status_for(exc)
            if status == grpc.StatusCode.INTERNAL:
                log.exception("%s failed", method)
            code = None  # counted here: abort() sends the status before it raises
            self.metrics.requests.labels(method, status.name).inc()
            await context.abort(status, message)
        finally:
            if code is not None:
                self.metrics.requests.labels(method, code.name).inc()

    @contextmanager
    def _admit(self):
        limit = self.cfg.max_concurrent_streams
        if self.active_streams >= limit:
            raise Overloaded(f"{self.active_streams} streams are already being served "
                             f"(max_concurrent_streams={limit}); retry later")
        self.active_streams += 1
        self.metrics.active_streams.inc()
        try:
            yield
        finally:
            self.active_streams -= 1
            self.metrics.active_streams.dec()

    async def Generate(self, request: pb.GenerateRequest, context):
        async with self._rpc("Generate", context):
            serving = self._ready()
            # Bad input is reported as such even while the server refuses work (fail-closed).
            req = validate_generate(request, serving.spec)
            if self.cfg.fail_closed and not self.traces_deliverable():
                raise Unavailable("trace events cannot be delivered to Redis and the server "
                                  "fails closed (fail_closed=true); retry later")
            with self._admit():
                handle = serving.engine.generate(req, timeout_s=context.time_remaining())
                timer = StreamTimer(self.metrics, handle.accepted)
                try:
                    async for item in handle:
                        if isinstance(item, TokenOut) and not item.prompt:
                            timer.token()
                        elif not isinstance(item, TokenOut):
                            self.metrics.prompt_tokens.inc(item.prompt_tokens)
                        yield convert.generate_response(item)
                finally:
                    handle.cancel()

    async def Trace(self, request: pb.TraceRequest, context) -> pb.TraceResponse:
        async with self._rpc("Trace", context):
            serving = self._ready()
            tokens = await serving.engine.trace(validate_trace(request, serving.spec))
            return pb.TraceResponse(tokens=[convert.token(t) for t in tokens])

    async def GetFeature(self, request: pb.GetFeatureRequest, context) -> pb.GetFeatureResponse:
        async with self._rpc("GetFeature", context):
            serving = self._ready()
            dictionary_id = resolve_dictionary(request.dictionary, serving.spec, "dictionary")
            feature = check_feature(dictionary_id, request.feature, serving.spec, "feature")
            entry = serving.runtime.dictionaries[dictionary_id]
            return pb.GetFeatureResponse(feature=convert.feature(entry, feature))

    async def ListFeatures(self, request: pb.ListFeaturesRequest, context
                           ) -> pb.ListFeaturesResponse:
        async with self._rpc("ListFeatures", context):
            serving = self._ready()
            dictionary_id, query, size, offset = validate_list(request, serving.spec)
            table = serving.runtime.dictionaries[dictionary_id].features
            matches = table.search(query)
            page = table.summaries(matches[offset:offset + size])
            token = next_page_token(dictionary_id, query, offset + size, len(matches))
            return pb.ListFeaturesResponse(features=[convert.feature_summary(r) for r in page],
                                           next_page_token=token, total_size=len(matches))

    async def GetModelInfo(self, request: pb.GetModelInfoRequest, context
                           ) -> pb.GetModelInfoResponse:
        async with self._rpc("GetModelInfo", context):
            serving = self._ready()
            return convert.model_info(serving.runtime, serving.spec.limits, self.cfg)
