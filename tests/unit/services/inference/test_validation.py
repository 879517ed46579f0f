"""Request validation: every bad input is an InvalidRequest naming its field and limit."""

from __future__ import annotations

import dataclasses
import math

import pytest
from fixtures_model import DEAD_FEATURE, MLP_ID, RESID_ID

from featurewatch.errors import InvalidRequest
from featurewatch.services.inference.validation import (
    next_page_token,
    validate_generate,
    validate_list,
    validate_trace,
)
from featurewatch.v1 import inference_pb2 as pb


def _gen(**fields) -> pb.GenerateRequest:
    fields.setdefault("prompt", "The river carries")
    return pb.GenerateRequest(**fields)


def _steer(**fields) -> pb.Steering:
    fields.setdefault("dictionary", MLP_ID)
    fields.setdefault("feature", 3)
    fields.setdefault("mode", pb.STEERING_MODE_CLAMP)
    return pb.Steering(**fields)


def test_valid_request_becomes_domain_objects(spec, runtime):
    req = validate_generate(_gen(
        max_new_tokens=5, sampling=pb.SamplingOptions(temperature=0.5, top_p=0.9, seed=7,
                                                      stop=["."]),
        trace=pb.TraceOptions(filter=pb.FeatureFilter(dictionaries=[MLP_ID], top_k=4),
                              include_prompt=True),
        steering=[_steer(value=2.0, positions=[1, 2])], request_id="abc-1"), spec)
    assert req.request_id == "abc-1" and req.max_new_tokens == 5
    assert req.prompt_ids == tuple(runtime.tokenizer.encode("The river carries"))
    assert (req.sampling.temperature, req.sampling.top_p, req.sampling.seed) == (0.5,
                                                                                 pytest.approx(0.9), 7)
    assert req.filter.dictionaries == (MLP_ID,) and req.filter.top_k == 4
    assert req.steering[0].positions == frozenset({1, 2}) and req.steering[0].mode == "clamp"


def test_defaults(spec):
    req = validate_generate(_gen(), spec)
    assert req.max_new_tokens == spec.limits.default_new_tokens
    assert req.sampling.temperature == 1.0 and req.sampling.top_p == 1.0
    assert req.filter.dictionaries == (MLP_ID, RESID_ID) and req.traced
    assert len(req.request_id) == 32


def test_relative_steering_uses_max_activation(spec, runtime):
    req = validate_generate(_gen(steering=[_steer(
        value=-3.0, unit=pb.STEERING_UNIT_MAX_ACTIVATION)]), spec)
    max_act = runtime.dictionaries[MLP_ID].features.max_activation(3)
    assert req.steering[0].value == pytest.approx(-3.0 * max_act)


CASES = [
    ("prompt", False, _gen(prompt="")),
    ("prompt", True, _gen(prompt="x" * 20_001)),
    ("max_new_tokens", True, _gen(max_new_tokens=257)),
    ("sampling.temperature", False, _gen(sampling=pb.SamplingOptions(temperature=-0.1))),
    ("sampling.temperature", False, _gen(sampling=pb.SamplingOptions(temperature=math.nan))),
    ("sampling.top_p", False, _gen(sampling=pb.SamplingOptions(top_p=0.0))),
    ("sampling.top_p", False, _gen(sampling=pb.SamplingOptions(top_p=1.5))),
    ("sampling.stop", True, _gen(sampling=pb.SamplingOptions(stop=["a"] * 9))),
    ("sampling.stop[0]", False, _gen(sampling=pb.SamplingOptions(stop=[""]))),
    ("trace.filter", False, _gen(trace=pb.TraceOptions(
        filter=pb.FeatureFilter(top_k=3, threshold=0.1)))),
    ("trace.filter.dictionaries", False, _gen(trace=pb.TraceOptions(
        filter=pb.FeatureFilter(dictionaries=["nope"])))),
    ("trace.filter.top_k", True, _gen(trace=pb.TraceOptions(filter=pb.FeatureFilter(
        top_k=257)))),
    ("trace.filter.threshold", False, _gen(trace=pb.TraceOptions(
        filter=pb.FeatureFilter(threshold=-1.0)))),
    ("trace.disabled", False, _gen(trace=pb.TraceOptions(disabled=True, include_prompt=True))),
    ("steering[0].dictionary", False, _gen(steering=[_steer(dictionary="")])),
    ("steering[0].dictionary", False, _gen(steering=[_steer(dictionary="nope")])),
    ("steering[0].feature", True, _gen(steering=[_steer(feature=256)])),
    ("steering[0].mode", False, _gen(steering=[_steer(mode=pb.STEERING_MODE_UNSPECIFIED)])),
    ("steering[0].value", False, _gen(steering=[_steer(value=math.nan)])),
    ("steering[0].value", False, _gen(steering=[_steer(value=math.inf)])),
    ("steering[0].value", False, _gen(steering=[_steer(value=-math.inf)])),
    ("steering[0].unit", False, _gen(steering=[_steer(mode=pb.STEERING_MODE_SCALE,
                                                      unit=pb.STEERING_UNIT_MAX_ACTIVATION)])),
    ("steering[0].unit", False, _gen(steering=[_steer(feature=DEAD_FEATURE,
                                                      unit=pb.STEERING_UNIT_MAX_ACTIVATION)])),
    ("steering[0].unit", False, _gen(steering=[_steer(dictionary=RESID_ID,
                                                      unit=pb.STEERING_UNIT_MAX_ACTIVATION)])),
    ("steering[0].positions", True, _gen(steering=[_steer(positions=[2048])])),
    ("steering", True, _gen(steering=[_steer()] * 65)),
    ("request_id", False, _gen(request_id="has space")),
    ("steering[0].value", True, _gen(steering=[_steer(value=1.0000001e6)])),
    ("steering[0].value", True, _gen(steering=[_steer(value=-1e30)])),
    ("steering[0].value", True, _gen(steering=[_steer(mode=pb.STEERING_MODE_SCALE,
                                                      value=1e7)])),
    ("steering[0].value", True, _gen(steering=[_steer(value=1e300,
                                                      unit=pb.STEERING_UNIT_MAX_ACTIVATION)])),
    ("steering[1]", False, _gen(steering=[_steer(value=1.0), _steer(value=2.0)])),
    ("steering[2]", False, _gen(steering=[_steer(value=1.0, positions=[1, 2]),
                                          _steer(value=2.0, positions=[3]),
                                          _steer(value=3.0, positions=[2, 5])])),
]


@pytest.mark.parametrize(("field", "out_of_range", "message"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_generate_requests(spec, field, out_of_range, message):
    with pytest.raises(InvalidRequest) as info:
        validate_generate(message, spec)
    assert info.value.field == field
    assert info.value.out_of_range is out_of_range


def test_prompt_token_limit(spec):
    small = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits,
                                                                 max_prompt_tokens=3))
    with pytest.raises(InvalidRequest, match="tokens exceeds the limit of 3") as info:
        validate_generate(_gen(prompt="The river carries silver light"), small)
    assert info.value.out_of_range


def test_trace_requests(spec):
    ok = validate_trace(pb.TraceRequest(tokens=pb.TokenIds(ids=[1, 2, 3])), spec)
    assert ok.token_ids == (1, 2, 3)
    bad = [(pb.TraceRequest(), "input", False),
           (pb.TraceRequest(tokens=pb.TokenIds()), "tokens.ids", False),
           (pb.TraceRequest(tokens=pb.TokenIds(ids=[400])), "tokens.ids", True),
           (pb.TraceRequest(tokens=pb.TokenIds(ids=[1] * 2049)), "tokens.ids", True),
           (pb.TraceRequest(text=""), "text", False),
           (pb.TraceRequest(text="x" * 20_001), "text", True)]
    for message, field, out_of_range in bad:
        with pytest.raises(InvalidRequest) as info:
            validate_trace(message, spec)
        assert (info.value.field, info.value.out_of_range) == (field, out_of_range)


def test_page_tokens(spec):
    first = validate_list(pb.ListFeaturesRequest(dictionary=MLP_ID, query="a",
                                                 page_size=5000), spec)
    assert first == (MLP_ID, "a", 1000, 0)
    token = next_page_token(MLP_ID, "a", 10, 100)
    assert validate_list(pb.ListFeaturesRequest(dictionary=MLP_ID, query="a",
                                                page_token=token), spec)[3] == 10
    for bad in (token + "x!", "garbage"):
        with pytest.raises(InvalidRequest, match="page_token"):
            validate_list(pb.ListFeaturesRequest(dictionary=MLP_ID, query="a",
                                                 page_token=bad), spec)
    with pytest.raises(InvalidRequest, match="another dictionary or query"):
        validate_list(pb.ListFeaturesRequest(dictionary=MLP_ID, query="b", page_token=token),
                      spec)
    assert next_page_token(MLP_ID, "a", 100, 100) == ""


def test_steering_limits_and_compatible_edits(spec):
    edge = validate_generate(_gen(steering=[_steer(value=-1e6)]), spec)
    assert edge.steering[0].value == -1e6  # the limit itself is allowed
    # clamps of one feature at disjoint positions, or clamp + add + scale, do not contradict
    req = validate_generate(_gen(steering=[
        _steer(value=1.0, positions=[1]), _steer(value=2.0, positions=[2]),
        _steer(mode=pb.STEERING_MODE_ADD, value=1.0), _steer(mode=pb.STEERING_MODE_SCALE,
                                                              value=2.0),
        _steer(feature=4, value=1.0)]), spec)
    assert [e.mode for e in req.steering] == ["clamp", "clamp", "add", "scale", "clamp"]


def test_limit_messages_name_field_and_limit(spec):
    with pytest.raises(InvalidRequest) as info:
        validate_generate(_gen(steering=[_steer(value=5e6)]), spec)
    assert str(info.value) == "steering[0].value: value 5e+06 exceeds the limit of ±1e+06"
    with pytest.raises(InvalidRequest) as info:
        validate_generate(_gen(steering=[_steer(), _steer(value=2.0)]), spec)
    assert str(info.value).startswith("steering[1]: clamps feature 3 of 'fx-mlp' at positions "
                                      "steering[0] already clamps")
    with pytest.raises(InvalidRequest) as info:
        validate_trace(pb.TraceRequest(text="x" * 20_001), spec)
    assert str(info.value) == "text: 20001 characters exceeds the limit of 20000"
