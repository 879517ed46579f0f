"""Every bad input gets INVALID_ARGUMENT or OUT_OF_RANGE naming the field — never INTERNAL."""

from __future__ import annotations

import math

import grpc
import pytest
from fixtures_model import DEAD_FEATURE, MLP_ID, RESID_ID
from inference_helpers import metric

from featurewatch.v1 import inference_pb2 as pb

pytestmark = pytest.mark.integration
INVALID, OUT = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE


def _steer(**fields):
    fields.setdefault("dictionary", MLP_ID)
    fields.setdefault("feature", 1)
    fields.setdefault("mode", pb.STEERING_MODE_CLAMP)
    return pb.Steering(**fields)


def _gen(**fields):
    fields.setdefault("prompt", "The river")
    return pb.GenerateRequest(**fields)


GENERATE_CASES = [
    ("empty prompt", _gen(prompt=""), INVALID, "prompt: must not be empty"),
    ("long prompt", _gen(prompt="river " * 5000), OUT, "exceeds the limit of 20000"),
    ("max tokens", _gen(max_new_tokens=2001), OUT, "max_new_tokens: 2001 exceeds the limit of"),
    ("unknown dictionary", _gen(trace=pb.TraceOptions(filter=pb.FeatureFilter(
        dictionaries=["nope"]))), INVALID, "unknown dictionary 'nope'"),
    ("feature out of range", _gen(steering=[_steer(feature=256)]), OUT,
     "steering[0].feature: feature 256 is out of range"),
    ("nan steering", _gen(steering=[_steer(value=math.nan)]), INVALID,
     "steering[0].value: must be a finite number"),
    ("inf steering", _gen(steering=[_steer(value=math.inf)]), INVALID, "steering[0].value"),
    ("top_k and threshold", _gen(trace=pb.TraceOptions(filter=pb.FeatureFilter(
        top_k=2, threshold=0.1))), INVALID, "set at most one of top_k and threshold"),
    ("negative temperature", _gen(sampling=pb.SamplingOptions(temperature=-1)), INVALID,
     "sampling.temperature"),
    ("top_p zero", _gen(sampling=pb.SamplingOptions(top_p=0)), INVALID, "sampling.top_p"),
    ("top_p above one", _gen(sampling=pb.SamplingOptions(top_p=1.01)), INVALID,
     "sampling.top_p"),
    ("relative and unknown", _gen(steering=[_steer(feature=DEAD_FEATURE,
                                                   unit=pb.STEERING_UNIT_MAX_ACTIVATION)]),
     INVALID, "no known max activation"),
    ("relative scale", _gen(steering=[_steer(mode=pb.STEERING_MODE_SCALE,
                                             unit=pb.STEERING_UNIT_MAX_ACTIVATION)]), INVALID,
     "contradicts"),
    ("no mode", _gen(steering=[_steer(mode=pb.STEERING_MODE_UNSPECIFIED)]), INVALID,
     "steering[0].mode"),
    ("ambiguous dictionary", _gen(steering=[_steer(dictionary="")]), INVALID,
     "required when several dictionaries are loaded"),
    ("disabled with prompt", _gen(trace=pb.TraceOptions(disabled=True, include_prompt=True)),
     INVALID, "trace.disabled"),
    ("too many stops", _gen(sampling=pb.SamplingOptions(stop=["x"] * 9)), OUT,
     "sampling.stop"),
    ("position beyond context", _gen(steering=[_steer(positions=[5000])]), OUT,
     "beyond the context length 2048"),
    ("huge steering", _gen(steering=[_steer(value=1e30)]), OUT,
     "steering[0].value: value 1e+30 exceeds the limit of ±1e+06"),
    ("two clamps", _gen(steering=[_steer(value=1), _steer(value=2, positions=[0])]), INVALID,
     "steering[1]: clamps feature 1"),
]


@pytest.mark.parametrize(("name", "message", "code", "detail"), GENERATE_CASES,
                         ids=[c[0] for c in GENERATE_CASES])
async def test_bad_generate(make_server, connect, name, message, code, detail):
    server = await make_server()
    stub = connect(server)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.Generate(message):
            pass
    assert info.value.code() == code
    assert detail in info.value.details()
    assert metric(server, "featurewatch_inference_requests_total", method="Generate",
                  code=code.name) == 1
    assert metric(server, "featurewatch_inference_requests_total", method="Generate",
                  code="INTERNAL") == 0


async def test_bad_unary_requests(make_server, connect):
    server = await make_server()
    stub = connect(server)
    cases = [
        (stub.GetFeature(pb.GetFeatureRequest(dictionary=MLP_ID, feature=256)), OUT,
         "feature 256 is out of range: dictionary 'fx-mlp' has d_sae=256"),
        (stub.GetFeature(pb.GetFeatureRequest(dictionary="nope")), INVALID,
         "dictionary: unknown dictionary 'nope'"),
        (stub.GetFeature(pb.GetFeatureRequest(feature=1)), INVALID, "dictionary: required"),
        (stub.ListFeatures(pb.ListFeaturesRequest(dictionary=RESID_ID, page_token="zz")),
         INVALID, "page_token"),
        (stub.Trace(pb.TraceRequest()), INVALID, "input: set text or tokens"),
        (stub.Trace(pb.TraceRequest(tokens=pb.TokenIds(ids=[5, 400]))), OUT,
         "token id 400 is out of range"),
        (stub.Trace(pb.TraceRequest(text="hi", filter=pb.FeatureFilter(top_k=1, threshold=1))),
         INVALID, "filter: set at most one"),
        (stub.Trace(pb.TraceRequest(text="")), INVALID, "text: must not be empty"),
        (stub.Trace(pb.TraceRequest(text="river " * 5000)), OUT,
         "text: 30000 characters exceeds the limit of 20000"),
    ]
    for call, code, detail in cases:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert (info.value.code(), detail in info.value.details()) == (code, True), detail
    assert metric(server, "featurewatch_inference_requests_total", method="Trace",
                  code="INTERNAL") == 0
