"""`featurewatch generate`: stream a generation from the inference service, with per-token
features and their labels (looked up with GetFeature), as rich text or JSON lines."""

from __future__ import annotations

import asyncio
import json
import re
import sys

import click
import grpc
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from featurewatch.v1 import inference_pb2 as pb
from featurewatch.v1 import inference_pb2_grpc

STEER = re.compile(r"^(?:(?P<dict>[^:=]+):)?(?P<feature>\d+)=(?P<value>[-+0-9.eE]+|nan|inf)"
                   r"(?P<rel>x)?(?:@(?P<pos>\d+(?:,\d+)*))?$")
MODES = {"clamp": pb.STEERING_MODE_CLAMP, "add": pb.STEERING_MODE_ADD,
         "scale": pb.STEERING_MODE_SCALE}


def parse_steer(spec: str, mode: str) -> pb.Steering:
    """`[DICTIONARY:]FEATURE=VALUE[x][@POS,...]`: VALUEx = multiples of the max activation."""
    match = STEER.match(spec.strip())
    if not match:
        raise click.BadParameter(f"{spec!r}: expected [DICTIONARY:]FEATURE=VALUE[x][@POS,...], "
                                 "e.g. 12=10x or fx:7=-3@0,1", param_hint="--steer")
    try:
        value = float(match["value"])
    except ValueError:
        raise click.BadParameter(f"{spec!r}: {match['value']!r} is not a number",
                                 param_hint="--steer") from None
    unit = pb.STEERING_UNIT_MAX_ACTIVATION if match["rel"] else pb.STEERING_UNIT_ABSOLUTE
    positions = [int(p) for p in match["pos"].split(",")] if match["pos"] else []
    return pb.Steering(dictionary=match["dict"] or "", feature=int(match["feature"]),
                       mode=MODES[mode], value=value, unit=unit, positions=positions)


def build_request(prompt: str, opts: dict) -> pb.GenerateRequest:
    """The GenerateRequest for the command's options."""
    sampling = pb.SamplingOptions(top_k=opts["top_k"], stop=list(opts["stop"]))
    for name in ("temperature", "top_p", "seed"):
        if opts[name] is not None:
            setattr(sampling, name, opts[name])
    filt = pb.FeatureFilter(dictionaries=list(opts["dictionary"]), top_k=opts["features"])
    return pb.GenerateRequest(
        prompt=prompt, max_new_tokens=opts["max_new_tokens"], sampling=sampling,
        trace=pb.TraceOptions(filter=filt, include_prompt=opts["include_prompt"]),
        steering=[parse_steer(s, opts["steer_mode"]) for s in opts["steer"]])


async def _labels(stub, tokens: list[pb.Token]) -> dict[tuple[str, int], str]:
    wanted = {(f.dictionary_id, i) for t in tokens for f in t.features for i in f.feature_ids}

    async def one(key):
        reply = await stub.GetFeature(pb.GetFeatureRequest(dictionary=key[0], feature=key[1]))
        return key, reply.feature.label

    return dict(await asyncio.gather(*(one(k) for k in sorted(wanted))))


async def run_generate(server: str, request: pb.GenerateRequest, timeout: float,
                       on_token=None) -> tuple[list[pb.Token], pb.GenerateSummary, dict]:
    """Stream one generation; returns (tokens, summary, labels of the features seen)."""
    tokens, summary = [], pb.GenerateSummary()
    async with grpc.aio.insecure_channel(server) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        async for reply in stub.Generate(request, timeout=timeout):
            if reply.HasField("token"):
                tokens.append(reply.token)
                if on_token is not None:
                    on_token(reply.token)
            else:
                summary = reply.summary
        labels = await _labels(stub, tokens)
    return tokens, summary, labels


def _token_json(token: pb.Token, labels: dict) -> dict:
    return {"id": token.id, "text": token.text, "logprob": token.logprob,
            "position": token.position, "prompt": token.prompt,
            "features": {f.dictionary_id: [
                {"feature": i, "activation": a, "label": labels.get((f.dictionary_id, i), "")}
                for i, a in zip(f.feature_ids, f.activations, strict=True)]
                for f in token.features}}


def _table(tokens: list[pb.Token], labels: dict) -> Table:
    table = Table(title="top features per token", show_lines=False)
    for column in ("pos", "token", "logprob", "features (dictionary:feature activation label)"):
        table.add_column(column)
    for token in tokens:
        cells = [f"{f.dictionary_id}:{i} [bold]{a:.3g}[/] "
                 f"{escape(labels.get((f.dictionary_id, i), ''))}"
                 for f in token.features for i, a in zip(f.feature_ids, f.activations,
                                                         strict=True)]
        style = "dim" if token.prompt else ""
        table.add_row(str(token.position), escape(repr(token.text)), f"{token.logprob:.2f}",
                      "\n".join(cells), style=style)
    return table


@click.command("generate")
@click.argument("prompt")
@click.option("--server", default="127.0.0.1:50051", show_default=True,
              envvar="FEATUREWATCH_SERVER", help="Inference service address.")
@click.option("--max-new-tokens", type=click.IntRange(min=0), default=0,
              help="0 = the server's default.")
@click.option("--temperature", type=float, help="0 = greedy; default 1.")
@click.option("--top-p", type=float, help="Nucleus sampling mass in (0, 1].")
@click.option("--top-k", type=click.IntRange(min=0), default=0,
              help="Sample from the k likeliest tokens.")
@click.option("--seed", type=click.IntRange(0, 2**64 - 1), help="Seed for reproducible sampling.")
@click.option("--stop", multiple=True, help="Stop after this string (repeatable).")
@click.option("--steer", multiple=True, help="[DICTIONARY:]FEATURE=VALUE[x][@POS,...]; VALUEx "
              "is a multiple of the feature's max activation (repeatable).")
@click.option("--steer-mode", type=click.Choice(sorted(MODES)), default="clamp",
              show_default=True)
@click.option("--dictionary", multiple=True, help="Dictionaries to show (default: all).")
@click.option("--features", type=click.IntRange(min=0), default=3, show_default=True,
              help="Top features shown per token (0 = every non-zero one).")
@click.option("--include-prompt", is_flag=True, help="Also show the prompt tokens' features.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Deadline (s).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of rich output.")
def generate(prompt: str, server: str, timeout: float, as_json: bool, **opts) -> None:
    """Generate a continuation of PROMPT and show, per token, its top features and labels."""
    request = build_request(prompt, opts)
    console = Console()

    def show(token: pb.Token) -> None:
        if not token.prompt:
            console.print(token.text, end="", markup=False, highlight=False)

    stream = None if as_json else show
    try:
        tokens, summary, labels = asyncio.run(run_generate(server, request, timeout, stream))
    except grpc.aio.AioRpcError as exc:
        raise click.ClickException(f"{exc.code().name}: {exc.details()}") from None
    if as_json:
        for token in tokens:
            sys.stdout.write(json.dumps(_token_json(token, labels)) + "\n")
        sys.stdout.write(json.dumps({"summary": {
            "request_id": summary.request_id,
            "finish_reason": pb.FinishReason.Name(summary.finish_reason),
            "prompt_tokens": summary.prompt_tokens,
            "generated_tokens": summary.generated_tokens,
            "time_to_first_token_s": summary.time_to_first_token.ToNanoseconds() / 1e9,
            "total_s": summary.total_time.ToNanoseconds() / 1e9, "seed": summary.seed}}) + "\n")
        return
    console.print()
    console.print(_table(tokens, labels))
    console.print(f"{pb.FinishReason.Name(summary.finish_reason)}: "
                  f"{summary.generated_tokens} tokens in "
                  f"{summary.total_time.ToNanoseconds() / 1e9:.3f} s (request {summary.request_id})")
