"""Request validation: protobuf requests in, domain objects out, InvalidRequest naming the field.

Limits (prompt length, tokens, d_sae, context) come from the loaded model and the config, so
every refusal says which field broke which limit. Nothing here raises anything else for user
input: a bad request can never become INTERNAL.
"""

from __future__ import annotations

import base64
import json
import math
import re
import secrets
import uuid

from featurewatch.errors import InvalidRequest
from featurewatch.services.inference.domain import (
    FeatureFilter,
    GenerationRequest,
    SamplingParams,
    ServingSpec,
    SteeringEdit,
    TraceRequest,
)
from featurewatch.v1 import inference_pb2 as pb

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_STOP_CHARS = 256
MAX_STEERING = 64
#: Largest |value| of a steering edit in model units (or as a scale factor). Larger finite values
#: overflow float32 inside the model (layer norms square them) and turn the logits into NaN.
MAX_STEERING_MAGNITUDE = 1e6
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MODES = {pb.STEERING_MODE_CLAMP: "clamp", pb.STEERING_MODE_ADD: "add",
         pb.STEERING_MODE_SCALE: "scale"}


def resolve_dictionary(name: str, spec: ServingSpec, field: str) -> str:
    """The dictionary id `name` refers to; empty means the only loaded dictionary."""
    loaded = sorted(spec.dictionaries)
    if not name:
        if len(loaded) == 1:
            return loaded[0]
        raise InvalidRequest(field, f"required when several dictionaries are loaded: {loaded}")
    if name not in spec.dictionaries:
        raise InvalidRequest(field, f"unknown dictionary {name!r}; loaded: {loaded}")
    return name


def check_feature(dictionary_id: str, feature: int, spec: ServingSpec, field: str) -> int:
    """`feature` if it is < d_sae of the dictionary, else OUT_OF_RANGE."""
    d_sae = spec.dictionaries[dictionary_id].d_sae
    if feature >= d_sae:
        raise InvalidRequest(field, f"feature {feature} is out of range: dictionary "
                             f"{dictionary_id!r} has d_sae={d_sae} (ids 0..{d_sae - 1})",
                             out_of_range=True)
    return feature


def _finite(value: float, field: str) -> float:
    if not math.isfinite(value):
        raise InvalidRequest(field, f"must be a finite number, got {value}")
    return value


def _prompt_ids(prompt: str, spec: ServingSpec, field: str = "prompt") -> tuple[int, ...]:
    limits = spec.limits
    if not prompt:
        raise InvalidRequest(field, "must not be empty")
    if len(prompt) > limits.max_prompt_chars:
        raise InvalidRequest(field, f"{len(prompt)} characters exceeds the limit of "
                             f"{limits.max_prompt_chars}", out_of_range=True)
    ids = spec.encode(prompt)
    if not ids:
        raise InvalidRequest(field, "encodes to no tokens")
    if len(ids) > limits.max_prompt_tokens:
        raise InvalidRequest(field, f"{len(ids)} tokens exceeds the limit of "
                             f"{limits.max_prompt_tokens}", out_of_range=True)
    return tuple(ids)


def _max_new_tokens(requested: int, spec: ServingSpec) -> int:
    limits = spec.limits
    if requested > limits.max_new_tokens:
        raise InvalidRequest("max_new_tokens", f"{requested} exceeds the limit of "
                             f"{limits.max_new_tokens}", out_of_range=True)
    return requested or limits.default_new_tokens


def _sampling(msg: pb.SamplingOptions, spec: ServingSpec) -> SamplingParams:
    temperature = msg.temperature if msg.HasField("temperature") else 1.0
    if not math.isfinite(temperature) or temperature < 0:
        raise InvalidRequest("sampling.temperature", f"must be >= 0, got {temperature}")
    top_p = msg.top_p if msg.HasField("top_p") else 1.0
    if not math.isfinite(top_p) or not 0 < top_p <= 1:
        raise InvalidRequest("sampling.top_p", f"must be in (0, 1], got {top_p}")
    stops = tuple(msg.stop)
    if len(stops) > spec.limits.max_stop_strings:
        raise InvalidRequest("sampling.stop", f"{len(stops)} stop strings exceed the limit of "
                             f"{spec.limits.max_stop_strings}", out_of_range=True)
    for i, stop in enumerate(stops):
        if not stop:
            raise InvalidRequest(f"sampling.stop[{i}]", "must not be empty")
        if len(stop) > MAX_STOP_CHARS:
            raise InvalidRequest(f"sampling.stop[{i}]", f"{len(stop)} characters exceeds the "
                                 f"limit of {MAX_STOP_CHARS}", out_of_range=True)
    seed = msg.seed if msg.HasField("seed") else secrets.randbits(63)
    return SamplingParams(temperature=temperature, top_p=top_p, top_k=msg.top_k, seed=seed,
                          stop=stops)


def validate_filter(msg: pb.FeatureFilter, spec: ServingSpec, field: str) -> FeatureFilter:
    """The dictionaries and top-k / threshold of a trace; at most one of the two."""
    names = list(dict.fromkeys(msg.dictionaries)) or sorted(spec.dictionaries)
    ids = tuple(resolve_dictionary(n, spec, f"{field}.dictionaries") for n in names)
    if msg.top_k and msg.HasField("threshold"):
        raise InvalidRequest(field, "set at most one of top_k and threshold")
    threshold = msg.threshold if msg.HasField("threshold") else 0.0
    if not math.isfinite(threshold) or threshold < 0:
        raise InvalidRequest(f"{field}.threshold", f"must be a finite number >= 0, got {threshold}")
    widest = max(spec.dictionaries[d].d_sae for d in ids)
    if msg.top_k > widest:
        raise InvalidRequest(f"{field}.top_k", f"{msg.top_k} exceeds d_sae={widest}",
                             out_of_range=True)
    return FeatureFilter(dictionaries=ids, top_k=msg.top_k, threshold=threshold)


def _bounded(value: float, field: str, what: str) -> float:
    if abs(value) > MAX_STEERING_MAGNITUDE:
        raise InvalidRequest(field, f"{what} {value:g} exceeds the limit of "
                             f"±{MAX_STEERING_MAGNITUDE:g}", out_of_range=True)
    return value


def _steering_value(msg: pb.Steering, dictionary_id: str, spec: ServingSpec, field: str
                    ) -> float:
    value = _finite(msg.value, f"{field}.value")
    if msg.unit != pb.STEERING_UNIT_MAX_ACTIVATION:
        return _bounded(value, f"{field}.value", "value")
    if msg.mode == pb.STEERING_MODE_SCALE:
        raise InvalidRequest(f"{field}.unit", "STEERING_MODE_SCALE takes a plain factor; "
                             "STEERING_UNIT_MAX_ACTIVATION contradicts it")
    max_act = spec.dictionaries[dictionary_id].max_activation(msg.feature)
    if max_act is None:
        raise InvalidRequest(f"{field}.unit", f"feature {msg.feature} of {dictionary_id!r} has "
                             "no known max activation (no features.parquet, or it never fired);"
                             " use STEERING_UNIT_ABSOLUTE")
    return _bounded(value * max_act, f"{field}.value",
                    f"value × max activation ({max_act:g}) =")


def _steering(msg: pb.Steering, spec: ServingSpec, field: str) -> SteeringEdit:
    dictionary_id = resolve_dictionary(msg.dictionary, spec, f"{field}.dictionary")
    check_feature(dictionary_id, msg.feature, spec, f"{field}.feature")
    if msg.mode not in MODES:
        raise InvalidRequest(f"{field}.mode", "choose STEERING_MODE_CLAMP, _ADD or _SCALE")
    if msg.unit not in (pb.STEERING_UNIT_UNSPECIFIED, pb.STEERING_UNIT_ABSOLUTE,
                        pb.STEERING_UNIT_MAX_ACTIVATION):
        raise InvalidRequest(f"{field}.unit", f"unknown unit {msg.unit}")
    value = _steering_value(msg, dictionary_id, spec, field)
    context = spec.limits.context_length
    for position in msg.positions:
        if position >= context:
            raise InvalidRequest(f"{field}.positions", f"position {position} is beyond the "
                                 f"context length {context}", out_of_range=True)
    positions = frozenset(msg.positions) if msg.positions else None
    return SteeringEdit(dictionary_id, msg.feature, MODES[msg.mode], value, positions)


def _no_double_clamp(edits: tuple[SteeringEdit, ...]) -> None:
    """Two clamps of one feature at a shared position ask for two values at once."""
    clamps: dict[tuple[str, int], list[tuple[int, SteeringEdit]]] = {}
    for j, edit in enumerate(edits):
        if edit.mode != "clamp":
            continue
        key = (edit.dictionary_id, edit.feature)
        for i, earlier in clamps.get(key, []):
            if (earlier.positions is None or edit.positions is None
                    or earlier.positions & edit.positions):
                raise InvalidRequest(f"steering[{j}]", f"clamps feature {edit.feature} of "
                                     f"{edit.dictionary_id!r} at positions steering[{i}] "
                                     "already clamps; the two values contradict")
        clamps.setdefault(key, []).append((j, edit))


def _request_id(value: str) -> str:
    if not value:
        return uuid.uuid4().hex
    if not REQUEST_ID.match(value):
        raise InvalidRequest("request_id", "use 1-128 letters, digits, '.', '_', ':' or '-'")
    return value


def validate_generate(msg: pb.GenerateRequest, spec: ServingSpec) -> GenerationRequest:
    """A GenerationRequest, or InvalidRequest naming the first bad field."""
    request_id = _request_id(msg.request_id)
    max_new = _max_new_tokens(msg.max_new_tokens, spec)
    sampling = _sampling(msg.sampling, spec)
    trace = msg.trace
    filt = validate_filter(trace.filter, spec, "trace.filter")
    if trace.disabled and (trace.include_prompt or trace.HasField("filter")):
        raise InvalidRequest("trace.disabled", "contradicts trace.include_prompt / trace.filter")
    if len(msg.steering) > MAX_STEERING:
        raise InvalidRequest("steering", f"{len(msg.steering)} edits exceed the limit of "
                             f"{MAX_STEERING}", out_of_range=True)
    steering = tuple(_steering(s, spec, f"steering[{i}]") for i, s in enumerate(msg.steering))
    _no_double_clamp(steering)
    prompt_ids = _prompt_ids(msg.prompt, spec)
    return GenerationRequest(request_id=request_id, prompt=msg.prompt, prompt_ids=prompt_ids,
                             max_new_tokens=max_new, sampling=sampling, filter=filt,
                             include_prompt=trace.include_prompt, traced=not trace.disabled,
                             steering=steering)


def validate_trace(msg: pb.TraceRequest, spec: ServingSpec) -> TraceRequest:
    """A TraceRequest from text or token ids (exactly one)."""
    which = msg.WhichOneof("input")
    if which is None:
        raise InvalidRequest("input", "set text or tokens")
    filt = validate_filter(msg.filter, spec, "filter")
    if which == "text":
        return TraceRequest(_prompt_ids(msg.text, spec, "text"), filt)
    ids = tuple(msg.tokens.ids)
    if not ids:
        raise InvalidRequest("tokens.ids", "must not be empty")
    limit = spec.limits.context_length
    if len(ids) > limit:
        raise InvalidRequest("tokens.ids", f"{len(ids)} tokens exceeds the context length "
                             f"{limit}", out_of_range=True)
    vocab = spec.limits.vocab_size
    bad = next((t for t in ids if t >= vocab), None)
    if bad is not None:
        raise InvalidRequest("tokens.ids", f"token id {bad} is out of range: the vocabulary "
                             f"has {vocab} tokens", out_of_range=True)
    return TraceRequest(ids, filt)


def _page_token(dictionary_id: str, query: str, offset: int) -> str:
    raw = json.dumps({"d": dictionary_id, "q": query, "o": offset}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def validate_list(msg: pb.ListFeaturesRequest, spec: ServingSpec) -> tuple[str, str, int, int]:
    """(dictionary id, query, page size, offset) of a ListFeatures request."""
    dictionary_id = resolve_dictionary(msg.dictionary, spec, "dictionary")
    page_size = min(msg.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not msg.page_token:
        return dictionary_id, msg.query, page_size, 0
    try:
        token = json.loads(base64.b64decode(msg.page_token, altchars=b"-_", validate=True))
        offset = int(token["o"])
        same = token["d"] == dictionary_id and token["q"] == msg.query and offset >= 0
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest("page_token", "is not a token this service issued") from None
    if not same:
        raise InvalidRequest("page_token", "belongs to another dictionary or query")
    return dictionary_id, msg.query, page_size, offset


def next_page_token(dictionary_id: str, query: str, offset: int, total: int) -> str:
    """The token of the page starting at `offset` ("" when there is none)."""
    return _page_token(dictionary_id, query, offset) if offset < total else ""
