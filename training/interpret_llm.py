"""An LLM explainer and simulator through any OpenAI-compatible `/v1/chat/completions` endpoint.

`ChatClient` posts chat requests with the standard library only: retries with exponential
backoff on 429 and 5xx (honouring Retry-After), a client-side rate limit, and an on-disk JSON
cache keyed by the hash of the request, so re-running an analysis costs no new calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurewatch.errors import ConfigError
from featurewatch.training.feature_stats import Example
from featurewatch.training.interpret import MAX_LEVEL, UnusableSimulation, quantise

RETRY_STATUS = {429, 500, 502, 503, 504}
EXPLAIN_SYSTEM = (
    "We are studying features of a language model. Each feature fires on some tokens. You see "
    "text excerpts with the feature's activation (0-9) after each token. Reply with one short "
    "phrase saying what the feature responds to, nothing else.")
SIMULATE_SYSTEM = (
    "We are studying features of a language model. Given a feature's explanation and a list "
    "of tokens, predict the feature's activation on each token as an integer 0-9 (0 = not "
    "firing). Reply with a JSON array of integers, one per token, nothing else.")


class LLMError(ConfigError):
    """The chat endpoint failed or answered something unusable."""


class ReplyError(LLMError, UnusableSimulation):
    """A simulator reply that is not the levels asked for: its code is left unscored."""


@dataclass(frozen=True)
class ChatConfig:
    """Where and how to reach the chat endpoint."""

    url: str
    """Base URL of the API, e.g. http://localhost:8000/v1 (…/chat/completions is appended)."""
    model: str
    """Model name sent in each request."""
    api_key: str = ""
    """Bearer token; empty: FEATUREWATCH_LLM_API_KEY, then OPENAI_API_KEY, from the environment."""
    requests_per_second: float = 2.0
    """Client-side rate limit (0 = none)."""
    max_retries: int = 5
    """Retries on 429 / 5xx / connection errors before giving up."""
    backoff_s: float = 1.0
    """First retry delay; doubles each retry (a Retry-After header wins)."""
    timeout_s: float = 60.0
    """Per-request timeout."""
    cache_dir: str = ""
    """Directory of cached responses ('' = no cache)."""


class ChatClient:
    """Chat completions with retries, rate limiting and a disk cache."""

    def __init__(self, cfg: ChatConfig) -> None:
        if not cfg.url or not cfg.model:
            raise ConfigError("the LLM explainer needs llm_url and llm_model")
        self.cfg = cfg
        self.api_key = (cfg.api_key or os.environ.get("FEATUREWATCH_LLM_API_KEY")
                        or os.environ.get("OPENAI_API_KEY", ""))
        self.endpoint = cfg.url.rstrip("/") + "/chat/completions"
        self._lock = threading.Lock()
        self._next_at = 0.0
        self.requests_sent = 0

    def _cache_path(self, payload: dict[str, Any]) -> Path | None:
        if not self.cfg.cache_dir:
            return None
        key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return Path(self.cfg.cache_dir) / f"{key}.json"

    def _wait_turn(self) -> None:
        if self.cfg.requests_per_second <= 0:
            return
        with self._lock:
            now = time.monotonic()
            wait = self._next_at - now
            self._next_at = max(now, self._next_at) + 1.0 / self.cfg.requests_per_second
        if wait > 0:
            time.sleep(wait)

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        delay, last = self.cfg.backoff_s, ""
        for attempt in range(self.cfg.max_retries + 1):
            self._wait_turn()
            request = urllib.request.Request(self.endpoint, body, headers, method="POST")
            self.requests_sent += 1
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout_s) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:200]!r}"
                if exc.code not in RETRY_STATUS:
                    raise LLMError(f"{self.endpoint}: {last}") from None
                retry_after = exc.headers.get("Retry-After")
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last, wait = f"connection failed ({exc})", delay
            except json.JSONDecodeError as exc:
                raise LLMError(f"{self.endpoint}: response is not JSON ({exc})") from None
            if attempt < self.cfg.max_retries:
                time.sleep(wait)
                delay *= 2
        raise LLMError(f"{self.endpoint}: gave up after {self.cfg.max_retries + 1} attempts "
                       f"({last})")

    def chat(self, messages: list[dict[str, str]], *, temperature: float = 0.0) -> str:
        """The assistant's reply to `messages` (from the cache when this request was seen)."""
        payload = {"model": self.cfg.model, "messages": messages, "temperature": temperature}
        path = self._cache_path(payload)
        if path is not None and path.is_file():
            return json.loads(path.read_text())["content"]
        reply = self._post(payload)
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise LLMError(f"{self.endpoint}: no choices[0].message.content in the "
                           f"response {str(reply)[:200]}") from None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"content": content}))
            tmp.replace(path)
        return content


def format_examples(examples: Sequence[Example]) -> str:
    """Excerpts as `token<TAB>level` lines, levels quantised against the examples' maximum."""
    top = max((max(ex.activations, default=0.0) for ex in examples), default=0.0)
    blocks = []
    for n, ex in enumerate(examples, 1):
        lines = [f"{json.dumps(tok, ensure_ascii=False)}\t{lvl}"
                 for tok, lvl in zip(ex.tokens, quantise(ex.activations, top), strict=True)]
        blocks.append(f"Excerpt {n}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


@dataclass
class OpenAIChatExplainer:
    """Asks the chat model for a one-phrase description of the examples."""

    client: ChatClient

    def explain(self, examples: Sequence[Example]) -> str:
        if not examples:
            raise ConfigError("cannot explain a code from an empty example set")
        text = self.client.chat([{"role": "system", "content": EXPLAIN_SYSTEM},
                                 {"role": "user", "content": format_examples(examples)}])
        return text.strip().splitlines()[0].strip() if text.strip() else ""


def parse_levels(text: str, n: int) -> list[float]:
    """The JSON integer array in a reply, checked to have `n` entries in 0..9."""
    start, end = text.find("["), text.rfind("]")
    try:
        values = json.loads(text[start: end + 1]) if 0 <= start < end else None
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, list) or len(values) != n:
        raise ReplyError(f"simulator reply is not a JSON array of {n} levels: {text[:200]!r}")
    try:
        return [float(min(MAX_LEVEL, max(0, int(v)))) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise ReplyError(f"simulator reply has non-integer levels: {text[:200]!r}") from None


@dataclass
class OpenAIChatSimulator:
    """Asks the chat model for per-token levels given only the explanation."""

    client: ChatClient

    def simulate(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        out = []
        for tokens in windows:
            listing = json.dumps(list(tokens), ensure_ascii=False)
            reply = self.client.chat([
                {"role": "system", "content": SIMULATE_SYSTEM},
                {"role": "user", "content": f"Explanation: {explanation}\nTokens: {listing}"}])
            out.append(parse_levels(reply, len(tokens)))
        return out
