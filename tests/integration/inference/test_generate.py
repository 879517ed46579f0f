"""Generate / Trace / features over a real grpc.aio server: traces equal direct encodings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from fixtures_model import D_SAE_MLP, MLP_ID, RESID_ID
from transformers import AutoModelForCausalLM

from featurewatch.training import hooks
from featurewatch.training.bundle import load_bundle
from featurewatch.v1 import inference_pb2 as pb

pytestmark = pytest.mark.integration
GREEDY = pb.SamplingOptions(temperature=0)


async def _generate(stub, **fields) -> tuple[list[pb.Token], pb.GenerateSummary]:
    fields.setdefault("sampling", GREEDY)
    tokens, summary = [], None
    async for reply in stub.Generate(pb.GenerateRequest(**fields)):
        if reply.HasField("token"):
            tokens.append(reply.token)
        else:
            summary = reply.summary
    return tokens, summary


def _direct(tiny, ids: list[int]) -> dict[str, np.ndarray]:
    """Each dictionary applied to the activations of a plain forward pass over `ids`."""
    model = AutoModelForCausalLM.from_pretrained(tiny.model_dir).eval()
    out = {}
    with torch.inference_mode():
        for bundle_dir in (tiny.mlp_bundle, tiny.resid_bundle):
            bundle = load_bundle(bundle_dir)
            with hooks.capture(model, bundle.hook_point) as acts:
                model(input_ids=torch.tensor([ids]))
            out[bundle.dictionary_id] = bundle.dictionary.encode(acts[0][0]).numpy()
    return out


def _as_dict(features: pb.FeatureActivations) -> dict[int, float]:
    return dict(zip(features.feature_ids, features.activations, strict=True))


@pytest.mark.parametrize("filt", [pb.FeatureFilter(top_k=5), pb.FeatureFilter(threshold=0.05),
                                  pb.FeatureFilter()], ids=["top5", "threshold", "all"])
async def test_per_token_trace_equals_direct_encoding(tiny, make_server, connect, filt):
    stub = connect(await make_server())
    tokens, summary = await _generate(stub, prompt="The river carries silver", max_new_tokens=12,
                                      trace=pb.TraceOptions(filter=filt, include_prompt=True))
    assert summary.generated_tokens == 12 and summary.finish_reason == pb.FINISH_REASON_LENGTH
    assert sum(t.prompt for t in tokens) == summary.prompt_tokens
    direct = _direct(tiny, [t.id for t in tokens])
    for token in tokens:
        assert {f.dictionary_id for f in token.features} == {MLP_ID, RESID_ID}
        for features in token.features:
            row = direct[features.dictionary_id][token.position]
            order = np.argsort(-row, kind="stable")
            if filt.top_k:
                expected = order[:filt.top_k]
            else:
                expected = order[row[order] > (filt.threshold if filt.HasField("threshold")
                                               else 0)]
            got = _as_dict(features)
            assert list(got) == expected.tolist()  # same features, largest first
            assert np.allclose(list(got.values()), row[expected], atol=1e-5)


async def test_trace_rpc_equals_generate_trace(make_server, connect):
    stub = connect(await make_server())
    filt = pb.FeatureFilter(dictionaries=[MLP_ID], top_k=8)
    tokens, _ = await _generate(stub, prompt="Quiet gardens hum", max_new_tokens=10,
                                trace=pb.TraceOptions(filter=filt, include_prompt=True))
    traced = await stub.Trace(pb.TraceRequest(tokens=pb.TokenIds(ids=[t.id for t in tokens]),
                                              filter=filt))
    assert [t.id for t in traced.tokens] == [t.id for t in tokens]
    for a, b in zip(tokens, traced.tokens, strict=True):
        (fa,), (fb,) = a.features, b.features
        assert list(fa.feature_ids) == list(fb.feature_ids)
        assert np.allclose(fa.activations, fb.activations, atol=1e-5)
    by_text = await stub.Trace(pb.TraceRequest(text="Quiet gardens hum", filter=filt))
    prompt = [t for t in tokens if t.prompt]
    assert [(t.id, t.text, list(t.features[0].feature_ids)) for t in by_text.tokens] == \
        [(t.id, t.text, list(t.features[0].feature_ids)) for t in prompt]


async def test_steering_changes_output_and_trace_shows_clamped_value(tiny, make_server,
                                                                     connect):
    stub = connect(await make_server())
    plain, _ = await _generate(stub, prompt="The river carries", max_new_tokens=16)
    feature = 11
    max_act = pl.read_parquet(tiny.mlp_bundle / "features.parquet").filter(
        pl.col("feature") == feature)["max_activation"][0]
    steer = pb.Steering(dictionary=MLP_ID, feature=feature, mode=pb.STEERING_MODE_CLAMP,
                        value=100, unit=pb.STEERING_UNIT_MAX_ACTIVATION)
    steered, summary = await _generate(stub, prompt="The river carries", max_new_tokens=16,
                                       steering=[steer])
    assert summary.generated_tokens == 16
    assert [t.id for t in steered] != [t.id for t in plain]
    for token in steered:
        mlp = next(f for f in token.features if f.dictionary_id == MLP_ID)
        assert mlp.feature_ids[0] == feature
        assert mlp.activations[0] == pytest.approx(100 * max_act, rel=1e-6)
    # steering only some positions: earlier tokens keep their unsteered trace
    at = [pb.Steering(dictionary=MLP_ID, feature=feature, mode=pb.STEERING_MODE_ADD, value=50,
                      positions=[6])]
    partial, _ = await _generate(stub, prompt="The river carries", max_new_tokens=6,
                                 steering=at, trace=pb.TraceOptions(include_prompt=True))
    by_position = {t.position: _as_dict(next(f for f in t.features if f.dictionary_id == MLP_ID))
                   for t in partial}
    assert by_position[6].get(feature, 0) >= 50
    assert all(by_position[p].get(feature, 0) < 50 for p in by_position if p != 6)


async def test_sampling_options_are_honoured(make_server, connect):
    stub = connect(await make_server())
    prompt = "The river carries"

    async def ids(sampling, n=12):
        tokens, summary = await _generate(stub, prompt=prompt, max_new_tokens=n,
                                          sampling=sampling)
        return [t.id for t in tokens], summary

    greedy, _ = await ids(GREEDY)
    seeded, summary = await ids(pb.SamplingOptions(seed=7))
    assert summary.seed == 7 and (await ids(pb.SamplingOptions(seed=7)))[0] == seeded
    assert (await ids(pb.SamplingOptions(seed=8)))[0] != seeded
    drawn, summary = await ids(pb.SamplingOptions())  # no seed: the summary says which
    assert (await ids(pb.SamplingOptions(seed=summary.seed)))[0] == drawn
    assert (await ids(pb.SamplingOptions(seed=3, top_k=1)))[0] == greedy
    assert (await ids(pb.SamplingOptions(seed=3, top_p=1e-6)))[0] == greedy

    tokens, _ = await _generate(stub, prompt=prompt, max_new_tokens=12)
    k = next(i for i in range(3, 12) if tokens[i].text)
    stop = "".join(t.text for t in tokens[:k + 1])  # first completed by token k
    stopped, summary = await _generate(stub, prompt=prompt, max_new_tokens=12,
                                       sampling=pb.SamplingOptions(temperature=0, stop=[stop]))
    assert summary.finish_reason == pb.FINISH_REASON_STOP and summary.stop == stop
    assert [t.id for t in stopped] == greedy[:k + 1] and summary.generated_tokens == k + 1


async def test_summary_counts_and_timing(tiny, make_server, connect):
    from transformers import AutoTokenizer

    stub = connect(await make_server())
    tokens, summary = await _generate(stub, prompt="Silver light across", max_new_tokens=7,
                                      request_id="timing-1")
    n_prompt = len(AutoTokenizer.from_pretrained(tiny.model_dir).encode("Silver light across"))
    assert len(tokens) == 7
    assert (summary.request_id, summary.prompt_tokens, summary.generated_tokens) == \
        ("timing-1", n_prompt, 7)
    ttft, total = (summary.time_to_first_token.ToNanoseconds(),
                   summary.total_time.ToNanoseconds())
    assert 0 < ttft <= total


async def test_features_and_model_info(tiny, make_server, connect):
    stub = connect(await make_server())
    frame = pl.read_parquet(tiny.mlp_bundle / "features.parquet")
    row = frame.filter(pl.col("feature") == 9).row(0, named=True)
    feature = (await stub.GetFeature(pb.GetFeatureRequest(dictionary=MLP_ID, feature=9))).feature
    assert feature.label == row["label"]
    assert feature.max_activation == pytest.approx(row["max_activation"])
    assert list(feature.histogram_counts) == row["act_hist_counts"]
    assert [list(e.tokens) for e in feature.top_examples] == \
        [e["tokens"] for e in row["top_examples"]]
    assert [e.interval for e in feature.interval_examples] == \
        [e["interval"] for e in row["interval_examples"]]
    assert [x.token for x in feature.positive_logits] == row["logit_pos_tokens"]
    assert [x.token for x in feature.negative_logits] == row["logit_neg_tokens"]
    assert [x.value for x in feature.negative_logits] == \
        pytest.approx(row["logit_neg_values"], rel=1e-6)
    assert (feature.density, feature.mean_activation, feature.interp_score) == \
        pytest.approx((row["density"], row["mean_activation"], row["interp_score"]))
    assert list(feature.histogram_edges) == pytest.approx(row["act_hist_edges"])
    bare = (await stub.GetFeature(pb.GetFeatureRequest(dictionary=RESID_ID, feature=3))).feature
    assert bare.label == "" and not bare.HasField("max_activation") and not bare.top_examples

    wanted = sorted(frame.filter(pl.col("label").str.contains("river"))["feature"].to_list())
    seen, token = [], ""
    while True:
        page = await stub.ListFeatures(pb.ListFeaturesRequest(
            dictionary=MLP_ID, query="River", page_size=4, page_token=token))
        assert page.total_size == len(wanted) and len(page.features) <= 4
        seen += [f.feature for f in page.features]
        token = page.next_page_token
        if not token:
            break
    assert seen == wanted

    info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.model_id == "fixture-1l" and info.context_length == 2048
    assert "blocks.0.mlp.hook_post" in info.hook_points
    mlp = next(d for d in info.dictionaries if d.dictionary_id == MLP_ID)
    assert mlp.d_sae == D_SAE_MLP and mlp.has_features and "l0" in mlp.metrics
    assert info.limits.max_new_tokens == 2000
    assert (info.limits.max_steering_edits, info.limits.max_steering_magnitude) == (64, 1e6)
