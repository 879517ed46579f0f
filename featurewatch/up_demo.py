"""The demo half of `featurewatch up`: prompt families, gRPC calls to the two services, and the
choice of the features to flag.

Two flags are chosen from what the model really does on the demo prompts:
- the **target** fires on every (or most) request of the demo family (Python code by default)
  and as rarely as possible on the other families; the demo traffic makes it alert;
- the **control** fires on another family but never on the demo traffic, so it shows that an
  alert is specific to its feature: flagged, watched, and silent.
Nothing here imports torch: the model is only reached through the inference service.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from featurewatch.services.monitor.api import flag_to_pb
from featurewatch.services.monitor.flags import Flag
from featurewatch.v1 import inference_pb2 as pb
from featurewatch.v1 import inference_pb2_grpc, monitor_pb2, monitor_pb2_grpc

#: Short prompts (they must fit the tiny preset's 64-token context with room to generate).
FAMILIES: dict[str, tuple[str, ...]] = {
    "Python code": (
        "def fibonacci(n):\n    if n < 2:\n        return n\n",
        "import os\n\nfor name in os.listdir(path):\n    print(name)\n",
        "class Config:\n    def __init__(self, name):\n        self.name = name\n",
        "    try:\n        value = int(text)\n    except ValueError:\n",
    ),
    # Line breaks in the other families too, so that a mere newline feature does not count
    # as specific to code.
    "English prose": (
        "The library provides a simple way to read and write files on disk.",
        "This module defines functions\nfor working with dates and times.\n",
        "When the user presses the button,\n    the window is closed and saved.",
    ),
    "licence text": (
        "Permission is hereby granted, free of charge,\nto any person obtaining a copy",
        "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND, EXPRESS OR",
        "Redistribution and use in source and binary forms,\n\nwith or without modification",
    ),
    "other languages": (
        "Der schnelle braune Fuchs springt\nüber den faulen Hund.",
        "Le vif renard brun saute par-dessus le chien paresseux.",
        "El veloz murciélago hindú\n    comía feliz cardillo y kiwi.",
    ),
}
DEMO_FAMILY = "Python code"
#: A hit needs this fraction of the activation the feature reached on the profiled requests,
#: so run-to-run float noise cannot turn a hit into a miss or a zero into a hit.
MIN_ACTIVATION_FRACTION = 0.5

Maxima = dict[int, float]
"""Largest activation per fired feature over the tokens of one request."""


@dataclass(frozen=True)
class FlagChoice:
    """A feature to flag and the evidence for it."""

    dictionary_id: str
    feature: int
    name: str
    severity: str
    min_activation: float
    family: str
    """The prompt family it fires on."""
    label: str
    fired_in: str
    """Human summary, e.g. '4/4 Python code requests, 0/9 others'."""

    def as_yaml(self) -> dict:
        return {"dictionary": self.dictionary_id, "feature": self.feature, "name": self.name,
                "severity": self.severity, "min_activation": round(self.min_activation, 6),
                "runbook_url": ""}


@dataclass
class Profile:
    """Per-request feature maxima: the demo family's Generate requests and the other families'
    prompts (Trace)."""

    demo: list[Maxima]
    others: dict[str, list[Maxima]] = field(default_factory=dict)

    def other_prompts(self) -> Iterable[tuple[str, Maxima]]:
        return ((family, m) for family, rows in self.others.items() for m in rows)


class PromptFitter:
    """Trims prompts to the served model's prompt limit, counted with the model directory's
    tokenizer.json (the `tokenizers` library, no torch); without one prompts are sent as is."""

    def __init__(self, model_dir: Path, channel: grpc.Channel) -> None:
        info = inference_pb2_grpc.InferenceServiceStub(channel).GetModelInfo(
            pb.GetModelInfoRequest(), timeout=30)
        self.limit = info.limits.max_prompt_tokens or max(info.context_length - 1, 1)
        path = model_dir / "tokenizer.json"
        self.tokenizer = None
        if path.is_file():
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(path))

    def __call__(self, text: str, reserve: int = 0) -> str:
        """`text` cut to the limit less `reserve` tokens (kept for generation)."""
        keep = max(self.limit - reserve, 8)
        if self.tokenizer is None:
            return text
        offsets = self.tokenizer.encode(text).offsets
        return text if len(offsets) <= keep else text[:offsets[keep - 1][1]]


# ---- gRPC ------------------------------------------------------------------------------------
def wait_serving(address: str, timeout: float) -> None:
    """Block until the server's grpc.health.v1 says SERVING (model and dictionaries loaded)."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not SERVING after {timeout:.0f}s")
            time.sleep(0.25)


def _maxima(tokens: Iterable[pb.Token], dictionary_id: str) -> Maxima:
    out: Maxima = {}
    for token in tokens:
        for entry in token.features:
            if entry.dictionary_id != dictionary_id:
                continue
            for feature, act in zip(entry.feature_ids, entry.activations, strict=True):
                if act > out.get(feature, 0.0):
                    out[feature] = float(act)
    return out


def trace_maxima(channel: grpc.Channel, text: str, dictionary_id: str) -> Maxima:
    """Feature maxima of a text (Trace RPC: nothing is published to the monitor)."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    reply = stub.Trace(pb.TraceRequest(text=text, filter=pb.FeatureFilter(
        dictionaries=[dictionary_id])), timeout=60)
    return _maxima(reply.tokens, dictionary_id)


@dataclass(frozen=True)
class Generation:
    text: str
    maxima: Maxima
    generated_tokens: int


def generate(channel: grpc.Channel, prompt: str, dictionary_id: str,
             max_new_tokens: int) -> Generation:
    """Greedy generation with the full trace of prompt and output (published as an event)."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    request = pb.GenerateRequest(
        prompt=prompt, max_new_tokens=max_new_tokens,
        sampling=pb.SamplingOptions(temperature=0.0),
        trace=pb.TraceOptions(filter=pb.FeatureFilter(dictionaries=[dictionary_id]),
                              include_prompt=True))
    tokens, summary = [], pb.GenerateSummary()
    for reply in stub.Generate(request, timeout=120):
        if reply.HasField("token"):
            tokens.append(reply.token)
        else:
            summary = reply.summary
    text = "".join(t.text for t in tokens if not t.prompt)
    return Generation(text, _maxima(tokens, dictionary_id), summary.generated_tokens)


def profile(channel: grpc.Channel, dictionary_id: str, demo_family: str,
            max_new_tokens: int, fit: PromptFitter) -> Profile:
    """Run the demo family through Generate and every other family through Trace."""
    demo = [generate(channel, fit(p, max_new_tokens), dictionary_id, max_new_tokens).maxima
            for p in FAMILIES[demo_family]]
    others = {family: [trace_maxima(channel, fit(p), dictionary_id) for p in prompts]
              for family, prompts in FAMILIES.items() if family != demo_family}
    return Profile(demo, others)


def upsert_flags(address: str, choices: list[FlagChoice]) -> None:
    """Store the flags in the monitor through its MonitorService API (validated there)."""
    with grpc.insecure_channel(address) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        for c in choices:
            flag = Flag(c.dictionary_id, c.feature, c.name, c.severity, c.min_activation)
            stub.UpsertFlag(monitor_pb2.UpsertFlagRequest(flag=flag_to_pb(flag)), timeout=30)


# ---- flag choice -----------------------------------------------------------------------------
def read_labels(bundle: Path) -> dict[int, str]:
    """Feature labels from the bundle's features.parquet ({} when it has none)."""
    path = bundle / "features.parquet"
    if not path.is_file():
        return {}
    import polars as pl

    table = pl.read_parquet(path, columns=["feature", "label"])
    return {int(f): str(label or "") for f, label in table.iter_rows()}


def _name(family: str, label: str, feature: int) -> str:
    return f"{family} (#{feature}: {label or 'unlabelled'})"[:120]


def choose_target(prof: Profile, dictionary_id: str, family: str,
                  labels: dict[int, str]) -> FlagChoice:
    """The feature that fires on most demo requests and fewest other prompts, strongest first."""
    best, best_key = None, None
    for feature in {f for m in prof.demo for f in m}:
        hits = [m[feature] for m in prof.demo if m.get(feature, 0.0) > 0]
        minimum = MIN_ACTIVATION_FRACTION * min(hits)
        others = sum(m.get(feature, 0.0) >= minimum for _, m in prof.other_prompts())
        key = (-len(hits), others, -min(hits), feature)
        if best_key is None or key < best_key:
            best, best_key = (feature, minimum, len(hits), others), key
    if best is None:
        raise RuntimeError(f"no feature of {dictionary_id} fired on the {family} prompts")
    feature, minimum, n_hits, n_others = best
    n_other = sum(1 for _ in prof.other_prompts())
    return FlagChoice(dictionary_id, feature, _name(family, labels.get(feature, ""), feature),
                      "critical", minimum, family, labels.get(feature, ""),
                      f"{n_hits}/{len(prof.demo)} {family} requests, "
                      f"{n_others}/{n_other} other prompts")


def choose_control(prof: Profile, dictionary_id: str, labels: dict[int, str],
                   exclude: int) -> FlagChoice | None:
    """A feature that fires on another family but on no token of the demo traffic."""
    fired_in_demo = {f for m in prof.demo for f in m}
    best, best_key = None, None
    for family, rows in prof.others.items():
        for feature in {f for m in rows for f in m} - fired_in_demo - {exclude}:
            acts = [m[feature] for m in rows if m.get(feature, 0.0) > 0]
            key = (-len(acts) / len(rows), -max(acts), feature)
            if best_key is None or key < best_key:
                best, best_key = (family, feature, max(acts), len(acts), len(rows)), key
    if best is None:
        return None
    family, feature, peak, n_hits, n_rows = best
    return FlagChoice(dictionary_id, feature, _name(family, labels.get(feature, ""), feature),
                      "warning", MIN_ACTIVATION_FRACTION * peak, family,
                      labels.get(feature, ""),
                      f"{n_hits}/{n_rows} {family} prompts, 0/{len(prof.demo)} demo requests")


def send_demo(channel: grpc.Channel, dictionary_id: str, family: str, max_new_tokens: int,
              fit: PromptFitter) -> list[Generation]:
    """The demo traffic: the demo family's prompts through Generate, one at a time (as
    profiled, so the same tokens fire the same features)."""
    return [generate(channel, fit(prompt, max_new_tokens), dictionary_id, max_new_tokens)
            for prompt in FAMILIES[family]]
