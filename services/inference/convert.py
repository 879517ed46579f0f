"""Domain objects and loaded bundles → protobuf responses (the servicer's outbound half)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf.duration_pb2 import Duration

from featurewatch.services.inference.config import InferenceConfig
from featurewatch.services.inference.domain import GenerationSummary, Limits, TokenOut
from featurewatch.services.inference.runtime import LoadedDictionary, Runtime
from featurewatch.services.inference.validation import MAX_STEERING, MAX_STEERING_MAGNITUDE
from featurewatch.training import hooks
from featurewatch.v1 import inference_pb2 as pb

FINISH_REASONS = {"length": pb.FINISH_REASON_LENGTH, "eos": pb.FINISH_REASON_EOS,
                  "stop": pb.FINISH_REASON_STOP,
                  "context_length": pb.FINISH_REASON_CONTEXT_LENGTH}


def token(out: TokenOut) -> pb.Token:
    """A Token message with its per-dictionary sparse features."""
    features = [pb.FeatureActivations(dictionary_id=d, feature_ids=ids.tolist(),
                                      activations=acts.tolist())
                for d, (ids, acts) in out.features.items()]
    return pb.Token(id=out.id, text=out.text, logprob=out.logprob, position=out.position,
                    prompt=out.prompt, features=features)


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def summary(out: GenerationSummary) -> pb.GenerateSummary:
    return pb.GenerateSummary(
        request_id=out.request_id, finish_reason=FINISH_REASONS[out.finish_reason],
        stop=out.stop, prompt_tokens=out.prompt_tokens, generated_tokens=out.generated_tokens,
        time_to_first_token=_duration(out.time_to_first_token_s),
        total_time=_duration(out.total_s), seed=out.seed)


def generate_response(item: TokenOut | GenerationSummary) -> pb.GenerateResponse:
    if isinstance(item, TokenOut):
        return pb.GenerateResponse(token=token(item))
    return pb.GenerateResponse(summary=summary(item))


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _examples(rows: list[dict] | None) -> list[pb.FeatureExample]:
    return [pb.FeatureExample(tokens=[str(t) for t in row.get("tokens") or []],
                              activations=row.get("activations") or [],
                              center=int(row.get("center") or 0),
                              max_activation=float(row.get("max_activation") or 0.0),
                              interval=str(row.get("interval") or ""))
            for row in rows or []]


def _logits(tokens: list | None, values: list | None) -> list[pb.LogitEffect]:
    return [pb.LogitEffect(token=str(t), value=float(v))
            for t, v in zip(tokens or [], values or [], strict=False)]


def feature(entry: LoadedDictionary, feature_id: int) -> pb.Feature:
    """Everything features.parquet knows about one feature (only ids when it is absent)."""
    msg = pb.Feature(dictionary_id=entry.dictionary_id, feature=feature_id,
                     label=entry.features.label(feature_id))
    row = entry.features.row(feature_id)
    if row is None:
        return msg
    for name in ("density", "mean_activation", "max_activation", "interp_score"):
        value = _number(row.get(name))
        if value is not None:
            setattr(msg, name, value)
    msg.histogram_edges.extend(row.get("act_hist_edges") or [])
    msg.histogram_counts.extend(int(c) for c in row.get("act_hist_counts") or [])
    msg.top_examples.extend(_examples(row.get("top_examples")))
    msg.interval_examples.extend(_examples(row.get("interval_examples")))
    msg.positive_logits.extend(_logits(row.get("logit_pos_tokens"), row.get("logit_pos_values")))
    msg.negative_logits.extend(_logits(row.get("logit_neg_tokens"), row.get("logit_neg_values")))
    return msg


def feature_summary(row: dict[str, Any]) -> pb.FeatureSummary:
    msg = pb.FeatureSummary(feature=row["feature"], label=row["label"] or "")
    for name in ("density", "max_activation", "interp_score"):
        value = _number(row.get(name))
        if value is not None:
            setattr(msg, name, value)
    return msg


def _scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}


def dictionary_info(entry: LoadedDictionary) -> pb.DictionaryInfo:
    d = entry.dictionary
    return pb.DictionaryInfo(dictionary_id=entry.dictionary_id, hook_point=entry.hook_point,
                             architecture=d.architecture, d_in=d.d_in, d_sae=d.d_sae,
                             k=d.k or 0, has_features=entry.features.present,
                             metrics=_scalar_metrics(entry.bundle.metrics))


def model_info(runtime: Runtime, limits: Limits, cfg: InferenceConfig) -> pb.GetModelInfoResponse:
    config = runtime.model.config
    return pb.GetModelInfoResponse(
        model_id=runtime.binding.model_id, model_type=runtime.model_type,
        weights_sha256=runtime.binding.weights_sha256, vocab_size=runtime.vocab_size,
        context_length=runtime.context_length,
        n_layer=int(getattr(config, "num_hidden_layers", 0) or 0),
        hook_points=hooks.hook_point_names(runtime.model),
        dictionaries=[dictionary_info(e) for e in runtime.dictionaries.values()],
        limits=pb.Limits(max_prompt_chars=limits.max_prompt_chars,
                         max_prompt_tokens=limits.max_prompt_tokens,
                         max_new_tokens=limits.max_new_tokens,
                         max_concurrent_streams=cfg.max_concurrent_streams,
                         max_stop_strings=limits.max_stop_strings,
                         max_steering_edits=MAX_STEERING,
                         max_steering_magnitude=MAX_STEERING_MAGNITUDE))
