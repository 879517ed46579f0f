"""The OpenAI-compatible chat client against a local HTTP server playing the LLM."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest
from planted_model import PLANTED, planted_tokens, save_planted_bundle, save_planted_model

from featurewatch.errors import ConfigError
from featurewatch.training.analyze import AnalyzeConfig, analyze_bundle
from featurewatch.training.feature_stats import Example
from featurewatch.training.interpret import score_code, score_codes
from featurewatch.training.interpret_llm import (
    ChatClient,
    ChatConfig,
    LLMError,
    OpenAIChatExplainer,
    OpenAIChatSimulator,
    parse_levels,
)


class FakeLLM(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions from the server's script, recording every request."""

    def do_POST(self):  # noqa: N802 (http.server's naming)
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.requests.append({"path": self.path, "body": body,
                                "auth": self.headers.get("Authorization")})
        status, content, headers = server.script.pop(0) if server.script else \
            (200, server.answer(body), {})
        payload = json.dumps({"choices": [{"message": {"role": "assistant",
                                                       "content": content}}]}
                             if status == 200 else {"error": content}).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _answer(body: dict) -> str:
    """Explain: name the token 'x'; simulate: 9 on 'x', 0 elsewhere."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "predict" in system and len(body["messages"]) > 1:
        tokens = json.loads(user.split("Tokens: ", 1)[1])
        return json.dumps([9 if t == "x" else 0 for t in tokens])
    return "the token x\n(extra text ignored)"


@pytest.fixture
def llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeLLM)
    server.requests, server.script, server.answer = [], [], _answer
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _client(server, tmp_path, **kw) -> ChatClient:
    cfg = dict(url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="test-model",
               api_key="sk-test", backoff_s=0.01, requests_per_second=0,
               cache_dir=str(tmp_path / "cache"))
    cfg.update(kw)
    return ChatClient(ChatConfig(**cfg))


def test_chat_posts_openai_request_with_key(llm, tmp_path):
    client = _client(llm, tmp_path)
    assert client.chat([{"role": "user", "content": "hi"}]).startswith("the token x")
    req = llm.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["auth"] == "Bearer sk-test"
    assert req["body"]["model"] == "test-model"
    assert req["body"]["messages"] == [{"role": "user", "content": "hi"}]


def test_retries_429_and_5xx_then_succeeds(llm, tmp_path):
    llm.script = [(429, "slow down", {"Retry-After": "0"}), (503, "busy", {})]
    client = _client(llm, tmp_path)
    assert client.chat([{"role": "user", "content": "hi"}]).startswith("the token x")
    assert len(llm.requests) == 3 and client.requests_sent == 3


def test_cache_hit_sends_no_request(llm, tmp_path):
    client = _client(llm, tmp_path)
    messages = [{"role": "user", "content": "same"}]
    first = client.chat(messages)
    again = _client(llm, tmp_path).chat(messages)  # a new client reads the same disk cache
    assert again == first and len(llm.requests) == 1
    client.chat([{"role": "user", "content": "different"}])
    assert len(llm.requests) == 2


def test_gives_up_after_max_retries(llm, tmp_path):
    llm.script = [(429, "slow down", {})] * 3
    client = _client(llm, tmp_path, max_retries=2)
    with pytest.raises(LLMError, match="gave up after 3 attempts.*HTTP 429"):
        client.chat([{"role": "user", "content": "hi"}])
    assert len(llm.requests) == 3


def test_client_error_is_not_retried(llm, tmp_path):
    llm.script = [(401, "bad key", {})]
    with pytest.raises(LLMError, match="HTTP 401"):
        _client(llm, tmp_path).chat([{"role": "user", "content": "hi"}])
    assert len(llm.requests) == 1


def test_rate_limit_spaces_requests(llm, tmp_path):
    import time

    client = _client(llm, tmp_path, requests_per_second=20, cache_dir="")
    start = time.monotonic()
    for i in range(4):
        client.chat([{"role": "user", "content": str(i)}])
    assert time.monotonic() - start >= 3 / 20


def test_explainer_and_simulator_score_through_the_endpoint(llm, tmp_path):
    client = _client(llm, tmp_path)
    top = [Example(["a", "x"], [0.0, 4.0], 1), Example(["x", "b"], [3.0, 0.0], 0)]
    random = [Example(["c", "d"], [0.0, 0.0], 0)]
    scored = score_code(OpenAIChatExplainer(client), OpenAIChatSimulator(client), top, [],
                        random)
    assert scored.label == "the token x"
    assert scored.score == pytest.approx(1.0)
    explain_prompt = llm.requests[0]["body"]["messages"][1]["content"]
    assert '"x"\t9' in explain_prompt and '"a"\t0' in explain_prompt


def test_bad_replies_and_config_are_clear_errors(llm, tmp_path):
    with pytest.raises(LLMError, match="JSON array of 3"):
        parse_levels("[1, 2]", 3)
    with pytest.raises(LLMError, match="non-integer"):
        parse_levels('["a", 1]', 2)
    assert parse_levels("Sure: [0, 12, -1]", 3) == [0.0, 9.0, 0.0]
    with pytest.raises(ConfigError, match="llm_url and llm_model"):
        ChatClient(ChatConfig(url="", model=""))
    with pytest.raises(LLMError, match="connection failed"):
        _client(llm, tmp_path, url="http://127.0.0.1:9/v1", max_retries=1).chat(
            [{"role": "user", "content": "hi"}])


def test_unusable_simulator_reply_leaves_only_that_code_unscored(llm, tmp_path):
    def answer(body: dict) -> str:
        user = body["messages"][-1]["content"]
        if "Tokens: " not in user:
            return "the token x"
        tokens = json.loads(user.split("Tokens: ", 1)[1])
        # windows holding 'y' (the second code's) get one level too few
        return json.dumps([9 if t == "x" else 0 for t in tokens][: -1 if "y" in tokens else None])

    llm.answer = answer
    client = _client(llm, tmp_path)
    good = ([Example(["a", "x"], [0.0, 4.0], 1), Example(["x", "b"], [3.0, 0.0], 0)], [],
            [Example(["c", "d"], [0.0, 0.0], 0)])
    bad = ([Example(["y", "a"], [2.0, 0.0], 0), Example(["b", "y"], [0.0, 1.0], 1)], [], [])
    scored = score_codes(OpenAIChatExplainer(client), OpenAIChatSimulator(client), [bad, good])
    assert scored[0].label == "the token x" and math.isnan(scored[0].score)
    assert scored[1].score == pytest.approx(1.0)
    with pytest.raises(LLMError, match="non-integer"):
        parse_levels("[Infinity]", 1)


def _token_answer(body: dict) -> str:
    """A model that names the highest-level token and then predicts exactly that token."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "predict" in system:
        word = user.split("Explanation: the token ", 1)[1].split("\n", 1)[0]
        tokens = json.loads(user.split("Tokens: ", 1)[1])
        return json.dumps([9 if t == word else 0 for t in tokens])
    best = max((line.rsplit("\t", 1) for line in user.splitlines() if "\t" in line),
               key=lambda pair: int(pair[1]))
    return f"the token {json.loads(best[0])}"


def test_analyze_bundle_labels_and_scores_through_the_endpoint(llm, tmp_path):
    llm.answer = _token_answer
    model = save_planted_model(tmp_path / "model")
    bundle = save_planted_bundle(model, tmp_path / "bundle")
    cfg = AnalyzeConfig(n_tokens=768, top_k=4, window=2, n_scored_features=16,
                        n_scored_neurons=2, universality=False, bf16=False, threads=1,
                        explainer="openai", llm_model="m", llm_requests_per_second=0,
                        llm_url=f"http://127.0.0.1:{llm.server_address[1]}/v1",
                        llm_cache_dir=str(tmp_path / "cache"))
    summary = analyze_bundle(model, bundle, planted_tokens(), cfg, progress=False)
    row = pl.read_parquet(bundle / "features.parquet").row(PLANTED, named=True)
    assert row["label"] == f"the token t{PLANTED}"
    assert summary["median_feature_score"] > 0.9
    sent = len(llm.requests)
    analyze_bundle(model, bundle, planted_tokens(), cfg, progress=False)
    assert len(llm.requests) == sent  # every reply came from the cache
