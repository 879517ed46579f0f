"""The generate command's request building and --steer parsing."""

from __future__ import annotations

import click
import pytest

from featurewatch.services.inference.client import build_request, parse_steer
from featurewatch.v1 import inference_pb2 as pb


@pytest.mark.parametrize(("spec", "expected"), [
    ("12=5", ("", 12, 5.0, pb.STEERING_UNIT_ABSOLUTE, [])),
    ("12=10x", ("", 12, 10.0, pb.STEERING_UNIT_MAX_ACTIVATION, [])),
    ("fx-mlp:7=-3.5@0,2", ("fx-mlp", 7, -3.5, pb.STEERING_UNIT_ABSOLUTE, [0, 2])),
    ("d:1=1e2x", ("d", 1, 100.0, pb.STEERING_UNIT_MAX_ACTIVATION, [])),
])
def test_parse_steer(spec, expected):
    steer = parse_steer(spec, "add")
    assert (steer.dictionary, steer.feature, steer.value, steer.unit,
            list(steer.positions)) == expected
    assert steer.mode == pb.STEERING_MODE_ADD


@pytest.mark.parametrize("spec", ["x=1", "12", "12=", "12=abc", "-1=3", "12=1@"])
def test_parse_steer_rejects(spec):
    with pytest.raises(click.BadParameter, match="--steer|FEATURE"):
        parse_steer(spec, "clamp")


def test_build_request_sets_only_given_sampling_fields():
    opts = {"top_k": 0, "stop": (".",), "temperature": None, "top_p": 0.9, "seed": 3,
            "dictionary": ("fx-mlp",), "features": 4, "max_new_tokens": 7,
            "include_prompt": True, "steer": ("3=2",), "steer_mode": "clamp"}
    request = build_request("hi", opts)
    assert not request.sampling.HasField("temperature")
    assert request.sampling.top_p == pytest.approx(0.9) and request.sampling.seed == 3
    assert request.trace.filter.top_k == 4 and request.trace.include_prompt
    assert request.steering[0].feature == 3 and request.max_new_tokens == 7


@pytest.mark.parametrize("args", [["--top-k", "-1"], ["--max-new-tokens", "-5"],
                                  ["--seed", "-1"], ["--features", "-2"]])
def test_negative_counts_are_usage_errors(args):
    from click.testing import CliRunner

    from featurewatch.services.inference.client import generate

    result = CliRunner().invoke(generate, ["hi", "--server", "127.0.0.1:1", *args])
    assert result.exit_code == 2 and args[0] in result.output  # not a protobuf traceback
