"""The engine driven directly: KV-cached batched generation, traces, events, finish reasons,
cancellation and deadlines."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fixtures_model import MLP_ID, RESID_ID

from featurewatch.services.inference.domain import (
    FeatureFilter,
    GenerationRequest,
    GenerationSummary,
    SamplingParams,
    SteeringEdit,
    TraceRequest,
)
from featurewatch.services.inference.engine import Engine
from featurewatch.services.inference.streams import Expired
from featurewatch.training import hooks
from featurewatch.v1 import trace_pb2

ALL = FeatureFilter((MLP_ID, RESID_ID))


def _request(runtime, prompt="The river carries", n=8, **fields) -> GenerationRequest:
    fields.setdefault("sampling", SamplingParams(temperature=0))
    fields.setdefault("filter", ALL)
    return GenerationRequest(request_id=fields.pop("request_id", "r1"), prompt=prompt,
                             prompt_ids=tuple(runtime.tokenizer.encode(prompt)),
                             max_new_tokens=n, **fields)


async def _collect(handle):
    items = [item async for item in handle]
    assert isinstance(items[-1], GenerationSummary)
    return items[:-1], items[-1]


@pytest.fixture
def events():
    return []


@pytest.fixture
def make_engine(runtime, events):
    engines = []

    def make(rt=runtime, **kwargs):
        kwargs.setdefault("publish", lambda d, payload: events.append(
            trace_pb2.TraceEvent.FromString(payload)))
        engine = Engine(rt, **kwargs)
        engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


@pytest.fixture
def forwards(runtime):
    """Every forward pass of the shared model while the test runs: thread, tokens fed, cache."""
    calls = []

    def hook(module, args, kwargs):
        cache = kwargs.get("past_key_values") or kwargs.get("cache")
        positions = kwargs.get("position_ids")
        calls.append(SimpleNamespace(
            thread=threading.get_ident(), at=time.monotonic(),
            shape=tuple(kwargs["input_ids"].shape),
            cached=0 if cache is None else cache.get_seq_length(),
            positions=None if positions is None else positions.flatten().tolist()))

    handle = runtime.model.register_forward_pre_hook(hook, with_kwargs=True)
    yield calls
    handle.remove()


def _dense(trace, d_sae):
    out = np.zeros(d_sae, dtype=np.float32)
    out[trace[0]] = trace[1]
    return out


def _direct_features(runtime, ids):
    """Encode the activations of a full forward pass over `ids` with each dictionary."""
    model = runtime.model
    with torch.inference_mode(), hooks.capture(model, "blocks.0.mlp.hook_post") as mlp, \
            hooks.capture(model, "blocks.0.hook_resid_post") as resid:
        model(input_ids=torch.tensor([ids]))
    return {d: runtime.dictionaries[d].dictionary.encode(acts[0][0]).numpy()
            for d, acts in ((MLP_ID, mlp), (RESID_ID, resid))}


async def test_streamed_trace_equals_direct_encoding(runtime, make_engine):
    engine = make_engine()
    tokens, summary = await _collect(engine.generate(_request(runtime, include_prompt=True)))
    prompt = [t for t in tokens if t.prompt]
    generated = [t for t in tokens if not t.prompt]
    assert [t.position for t in tokens] == list(range(len(tokens)))
    assert summary.finish_reason == "length" and summary.generated_tokens == len(generated) == 8
    direct = _direct_features(runtime, [t.id for t in tokens])
    for token in tokens:
        for d, (ids, acts) in token.features.items():
            expected = direct[d][token.position]
            assert set(ids.tolist()) == set(np.flatnonzero(expected).tolist())
            assert np.allclose(_dense((ids, acts), expected.size), expected, atol=1e-5)
    assert len(prompt) == summary.prompt_tokens


async def test_batched_streams_equal_single_streams(runtime, make_engine):
    engine = make_engine()
    prompts = ["The river carries", "Quiet gardens", "Numbers and letters form signals", "A"]
    alone = [await _collect(engine.generate(_request(runtime, p))) for p in prompts]
    together = await asyncio.gather(*(_collect(engine.generate(_request(runtime, p)))
                                      for p in prompts))
    for (a, _), (b, _) in zip(alone, together, strict=True):
        assert [t.id for t in a] == [t.id for t in b]
        for ta, tb in zip(a, b, strict=True):
            for d in ta.features:
                d_sae = runtime.dictionaries[d].d_sae
                assert np.allclose(_dense(ta.features[d], d_sae), _dense(tb.features[d], d_sae),
                                   atol=1e-5)


async def test_trace_job_equals_generate_trace(runtime, make_engine):
    engine = make_engine()
    filt = FeatureFilter((MLP_ID,), top_k=5)
    tokens, _ = await _collect(engine.generate(_request(runtime, include_prompt=True,
                                                        filter=filt)))
    traced = await engine.trace(TraceRequest(tuple(t.id for t in tokens), filt))
    assert [t.id for t in traced] == [t.id for t in tokens]
    assert "".join(t.text for t in traced) == "".join(t.text for t in tokens)
    for a, b in zip(tokens, traced, strict=True):
        assert a.features[MLP_ID][0].tolist() == b.features[MLP_ID][0].tolist()
        assert np.allclose(a.features[MLP_ID][1], b.features[MLP_ID][1], atol=1e-5)
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


async def test_stop_string_eos_and_context_length(runtime, make_engine):
    engine = make_engine()
    seeded = SamplingParams(temperature=1.0, seed=5)
    tokens, _ = await _collect(engine.generate(_request(runtime, sampling=seeded)))
    k = next(i for i in range(1, len(tokens)) if tokens[i].id not in {t.id for t in tokens[:i]}
             and tokens[i].text and tokens[i].text not in "".join(t.text for t in tokens[:i]))
    stop = tokens[k].text
    stopped, summary = await _collect(engine.generate(_request(
        runtime, sampling=dataclasses.replace(seeded, stop=(stop,)))))
    assert summary.finish_reason == "stop" and summary.stop == stop
    assert [t.id for t in stopped] == [t.id for t in tokens[:k + 1]]

    eos = dataclasses.replace(runtime, eos_ids=frozenset({tokens[k].id}))
    ended, summary = await _collect(make_engine(eos).generate(_request(runtime,
                                                                       sampling=seeded)))
    assert summary.finish_reason == "eos" and [t.id for t in ended] == [t.id for t in tokens[:k]]

    prompt_len = len(runtime.tokenizer.encode("The river carries"))
    short = dataclasses.replace(runtime, context_length=prompt_len + 3)
    capped, summary = await _collect(make_engine(short).generate(_request(runtime)))
    assert summary.finish_reason == "context_length" and len(capped) == 3


async def test_trace_events_count_every_token(runtime, make_engine, events):
    engine = make_engine(chunk_tokens=4)
    tokens, summary = await _collect(engine.generate(_request(runtime, n=10,
                                                              include_prompt=True)))
    direct = _direct_features(runtime, [t.id for t in tokens])
    for d in (MLP_ID, RESID_ID):
        mine = [e for e in events if e.dictionary_id == d]
        assert [e.chunk_index for e in mine] == list(range(len(mine)))
        assert [e.final_chunk for e in mine] == [False] * (len(mine) - 1) + [True]
        assert sum(e.token_count for e in mine) == len(tokens) == summary.prompt_tokens + 10
        counts = np.zeros(direct[d].shape[1], dtype=int)
        maxes = np.zeros(direct[d].shape[1])
        for e in mine:
            assert e.request_id == "r1" and e.model_id == "fixture-1l" and e.prompt_text == ""
            np.add.at(counts, list(e.feature_ids), list(e.fire_counts))
            np.maximum.at(maxes, list(e.feature_ids), list(e.max_activations))
        assert counts.tolist() == (direct[d] > 0).sum(0).tolist()
        assert np.allclose(maxes, direct[d].max(0).clip(min=0), atol=1e-5)


async def test_untraced_generation_has_no_features_and_no_events(runtime, make_engine, events):
    engine = make_engine()
    traced, _ = await _collect(engine.generate(_request(runtime)))
    plain, _ = await _collect(engine.generate(_request(runtime, traced=False,
                                                       request_id="plain")))
    assert [t.id for t in plain] == [t.id for t in traced]
    assert all(t.features == {} for t in plain)
    assert {e.request_id for e in events} == {"r1"}


async def test_steering_changes_output_and_trace_shows_clamped_value(runtime, make_engine):
    engine = make_engine()
    plain, _ = await _collect(engine.generate(_request(runtime, n=12)))
    clamp = SteeringEdit(MLP_ID, 5, "clamp", 40.0)
    steered, _ = await _collect(engine.generate(_request(runtime, n=12, steering=(clamp,),
                                                         include_prompt=True)))
    assert [t.id for t in steered if not t.prompt] != [t.id for t in plain]
    for token in steered:
        ids, acts = token.features[MLP_ID]
        assert ids[0] == 5 and acts[0] == 40.0  # the largest, exactly the clamped value


async def test_cancel_stops_generation_within_a_step(runtime, make_engine):
    engine = make_engine()
    request = dataclasses.replace(_request(runtime), max_new_tokens=2000)
    handle = engine.generate(request)
    seen = 0
    async for _ in handle:
        seen += 1
        if seen == 3:
            break
    at_cancel = handle.steps
    handle.cancel()
    await asyncio.sleep(0.2)
    steps, total = handle.steps, engine.steps
    await asyncio.sleep(0.3)
    assert (handle.steps, engine.steps) == (steps, total)
    assert steps <= at_cancel + 1  # at most the step already running when cancel() came


async def test_deadline_expires_the_request(runtime, make_engine, forwards):
    engine = make_engine()
    handle = engine.generate(dataclasses.replace(_request(runtime), max_new_tokens=2000),
                             timeout_s=0.15)
    with pytest.raises(Expired):
        async for _ in handle:
            pass
    steps = engine.steps
    await asyncio.sleep(0.3)
    assert engine.steps == steps and handle.steps < 2000
    assert sum(call.at > handle.deadline for call in forwards) <= 1  # one step at most


async def test_generation_uses_the_kv_cache(runtime, make_engine, forwards):
    engine = make_engine()
    prompt_len = len(runtime.tokenizer.encode("The river carries"))
    await _collect(engine.generate(_request(runtime, n=6)))
    # prefill: the prompt at once into an empty cache; then one new token per step, the
    # cache holding every earlier token (a traced request feeds its last token for its trace)
    assert [(c.shape, c.cached) for c in forwards] == \
        [((1, prompt_len), 0)] + [((1, 1), prompt_len + i) for i in range(6)]
    assert [c.positions for c in forwards[1:]] == [[prompt_len + i] for i in range(6)]
    forwards.clear()
    await _collect(engine.generate(_request(runtime, n=6, traced=False, request_id="p")))
    assert [(c.shape, c.cached) for c in forwards] == \
        [((1, prompt_len), 0)] + [((1, 1), prompt_len + i) for i in range(5)]


async def test_model_never_runs_on_the_event_loop(runtime, make_engine, forwards):
    engine = make_engine()
    await asyncio.gather(_collect(engine.generate(_request(runtime, n=4))),
                         engine.trace(TraceRequest((1, 2, 3), ALL)))
    threads = {c.thread for c in forwards}
    assert len(forwards) >= 5 and len(threads) == 1
    assert threading.get_ident() not in threads  # the loop only awaited handles


async def test_steering_keeps_the_reconstruction_error(runtime, make_engine):
    engine = make_engine()
    plain, _ = await _collect(engine.generate(_request(runtime, n=10, include_prompt=True)))
    ids = [t.id for t in plain]
    fired = np.bincount(np.concatenate([t.features[MLP_ID][0] for t in plain]))
    feature = int(fired.argmax())
    identity = SteeringEdit(MLP_ID, feature, "scale", 1.0)
    same, _ = await _collect(engine.generate(_request(runtime, n=10, include_prompt=True,
                                                      steering=(identity,))))
    # an edit that changes no feature leaves the model's output as it was: x' = x
    assert [t.id for t in same] == ids
    assert np.allclose([t.logprob for t in same], [t.logprob for t in plain], atol=1e-4)
    # ... which is not because the dictionary reconstructs x well: it does not
    model, dictionary = runtime.model, runtime.dictionaries[MLP_ID].dictionary
    with torch.inference_mode(), hooks.capture(model, "blocks.0.mlp.hook_post") as acts:
        model(input_ids=torch.tensor([ids]))
    x = acts[0][0]
    assert float((x - dictionary(x)[0]).norm() / x.norm()) > 0.1


async def test_scale_and_add_in_absolute_units_at_chosen_positions(runtime, make_engine):
    engine = make_engine()
    plain, _ = await _collect(engine.generate(_request(runtime, n=8, include_prompt=True)))
    fired = np.bincount(np.concatenate([t.features[MLP_ID][0] for t in plain]))
    feature = int(fired.argmax())
    off = SteeringEdit(MLP_ID, feature, "scale", 0.0)
    silenced, _ = await _collect(engine.generate(_request(runtime, n=8, include_prompt=True,
                                                          steering=(off,))))
    assert all(feature not in t.features[MLP_ID][0] for t in silenced)
    prompt_len = sum(t.prompt for t in plain)
    add = SteeringEdit(MLP_ID, feature, "add", 7.0, frozenset({prompt_len}))
    added, _ = await _collect(engine.generate(_request(runtime, n=8, include_prompt=True,
                                                       steering=(add,))))
    d_sae = runtime.dictionaries[MLP_ID].d_sae
    for before, after in zip(plain[:prompt_len + 1], added[:prompt_len + 1], strict=True):
        delta = _dense(after.features[MLP_ID], d_sae) - _dense(before.features[MLP_ID], d_sae)
        expected = np.zeros(d_sae)
        if before.position == prompt_len:
            expected[feature] = 7.0
        assert np.allclose(delta, expected, atol=1e-4), before.position


async def test_untraced_steering_steers_like_traced_steering(runtime, make_engine):
    engine = make_engine()
    plain, _ = await _collect(engine.generate(_request(runtime, n=8)))
    fired = np.bincount(np.concatenate([t.features[MLP_ID][0] for t in plain]))
    push = SteeringEdit(MLP_ID, int(fired.argmax()), "add", 20.0)
    traced, _ = await _collect(engine.generate(_request(runtime, n=8, steering=(push,))))
    untraced, _ = await _collect(engine.generate(_request(runtime, n=8, steering=(push,),
                                                          traced=False, request_id="u")))
    assert [t.id for t in traced] != [t.id for t in plain]  # the edit does steer
    assert [t.id for t in untraced] == [t.id for t in traced]
    assert all(t.features == {} for t in untraced)
