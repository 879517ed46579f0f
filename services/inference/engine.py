"""The engine: one worker thread owns the model and runs prefills, batched KV-cached decode steps
and Trace passes; requests come in from the event loop and results go back through handles.

Token n's trace is the features at the position where token n is the input, i.e. from the decode
step that feeds it (the step that also yields the logits of token n+1). A traced request
therefore streams each token one step after sampling it and runs one extra step for its last
token; untraced requests stream tokens as soon as they are sampled.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from featurewatch.services.inference.domain import (
    FeatureFilter,
    GenerationRequest,
    GenerationSummary,
    SparseTrace,
    TokenOut,
    TraceRequest,
)
from featurewatch.services.inference.kvbatch import DecodeBatch, forward_kwargs, output_cache
from featurewatch.services.inference.passes import HookRouter, PassPlan
from featurewatch.services.inference.runtime import Runtime
from featurewatch.services.inference.sampling import make_generator, sample_token
from featurewatch.services.inference.streams import (
    END,
    EngineClosed,
    Expired,
    GenerationHandle,
    Outbox,
    TraceJob,
)
from featurewatch.services.inference.text import Detokenizer, StopMatcher
from featurewatch.services.inference.tracing import Tally, fired, nonzero_rows, select

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes], None]
_STOP = object()


@dataclass
class _Row:
    """A generation in progress (worker-thread state)."""

    handle: GenerationHandle
    detok: Detokenizer
    stops: StopMatcher
    generator: torch.Generator
    tallies: dict
    length: int = 0
    pending: int = 0
    pending_logprob: float = 0.0
    pending_position: int = 0
    generated: int = 0
    first_token_at: float | None = None
    done: bool = False
    edits: dict = field(default_factory=dict)

    @property
    def request(self) -> GenerationRequest:
        return self.handle.request


class Engine:
    """Generation and tracing on one model with its dictionaries, off the event loop."""

    def __init__(self, runtime: Runtime, *, max_batch_size: int = 16, chunk_tokens: int = 256,
                 publish: Publish | None = None, publish_prompt_text: bool = False) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.chunk_tokens = chunk_tokens
        self.publish = publish
        self.publish_prompt_text = publish_prompt_text
        self.router = HookRouter(list(runtime.dictionaries.values()))
        self._cache_arg, self._has_keep = forward_kwargs(runtime.model)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: deque[_Row] = deque()
        self._active: list[_Row] = []
        self._batch = DecodeBatch()
        self._outbox = Outbox()
        self._thread: threading.Thread | None = None
        self.steps = 0
        """Forward passes run so far (prefill, decode and trace)."""

    # ---- event-loop side -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="featurewatch-engine", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker; requests still in flight fail with EngineClosed."""
        if self._thread is not None:
            self._jobs.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def generate(self, request: GenerationRequest, *, timeout_s: float | None = None
                 ) -> GenerationHandle:
        """Queue a generation; iterate the handle for its tokens, cancel() it to stop early."""
        handle = GenerationHandle(request, asyncio.get_running_loop(), timeout_s)
        self._jobs.put(handle)
        return handle

    async def trace(self, request: TraceRequest) -> list[TokenOut]:
        """Per-token features of `request.token_ids` (one forward pass, no generation)."""
        loop = asyncio.get_running_loop()
        job = TraceJob(request, loop, loop.create_future())
        self._jobs.put(job)
        return await job.future

    # ---- worker loop -----------------------------------------------------------------------
    def _run(self) -> None:
        with torch.inference_mode(), self.router.install(self.runtime.model):
            while self._take_jobs(block=not self._active and not self._waiting):
                try:
                    self._start_waiting()
                    if self._active:
                        self._decode_step()
                except Exception as exc:  # a bug: fail what is in flight, keep serving
                    log.exception("engine step failed")
                    self._fail_active(exc)
                self._outbox.flush()
        closed = EngineClosed("the inference engine is shutting down")
        self._fail_active(closed)
        for row in self._waiting:
            self._outbox.put(row.handle, closed)
        self._outbox.flush()

    def _fail_active(self, error: Exception) -> None:
        for row in self._active:
            self._outbox.put(row.handle, error)
        self._active, self._batch = [], DecodeBatch()

    def _take_jobs(self, block: bool) -> bool:
        """Move queued jobs in (running Trace jobs at once); False once asked to stop."""
        while True:
            try:
                job = self._jobs.get(block=block)
            except queue.Empty:
                return True
            block = False
            if job is _STOP:
                return False
            if isinstance(job, TraceJob):
                self._run_trace(job)
            else:
                self._waiting.append(self._new_row(job))

    def _new_row(self, handle: GenerationHandle) -> _Row:
        req = handle.request
        tallies = ({d: Tally(e.d_sae) for d, e in self.runtime.dictionaries.items()}
                   if req.traced and self.publish is not None else {})
        edits: dict[str, list] = {}
        for edit in req.steering:
            edits.setdefault(edit.dictionary_id, []).append(edit)
        return _Row(handle, Detokenizer(self.runtime.tokenizer, req.prompt_ids),
                    StopMatcher(req.sampling.stop), make_generator(req.sampling.seed), tallies,
                    edits=edits)

    def _start_waiting(self) -> None:
        now = time.monotonic()
        while self._waiting and len(self._active) < self.max_batch_size:
            row = self._waiting.popleft()
            if row.handle.cancelled:
                continue
            if row.handle.expired(now):
                self._outbox.put(row.handle, Expired("deadline exceeded before generation "
                                                     "started"))
                continue
            try:
                self._prefill(row)
            except Exception as exc:  # a bug, not user input: fail this request only
                log.exception("prefill failed for request %s", row.request.request_id)
                self._outbox.put(row.handle, exc)

    def _plan(self, rows: list[_Row], positions: torch.Tensor) -> PassPlan:
        edits: dict[str, dict[int, list]] = {}
        for i, row in enumerate(rows):
            for dictionary_id, row_edits in row.edits.items():
                edits.setdefault(dictionary_id, {})[i] = row_edits
        return PassPlan(positions=positions, trace=any(r.request.traced for r in rows),
                        edits=edits)

    def _prefill(self, row: _Row) -> None:
        ids = row.request.prompt_ids
        plan = self._plan([row], torch.arange(len(ids)).unsqueeze(0))
        keep = {} if row.request.include_prompt or not self._has_keep else {"logits_to_keep": 1}
        input_ids = torch.tensor([ids])
        out = self.router.run(plan, self.runtime.model, input_ids=input_ids,
                              use_cache=True, **{self._cache_arg: DynamicCache()}, **keep)
        self.steps += 1
        row.handle.steps += 1
        row.length = len(ids)
        req = row.request
        # each dictionary's features scanned once, for the tallies and the prompt's traces alike
        shown = req.filter.dictionaries if req.include_prompt else ()
        entries = {d: nonzero_rows(plan.features[d][0]) for d in {*row.tallies, *shown}}
        if row.tallies:
            self._count(row, {d: [fired(e) for e in entries[d]] for d in row.tallies})
        if req.include_prompt:
            for token in self._prompt_tokens(input_ids[0], out.logits[0], entries, req.filter):
                self._outbox.put(row.handle, token)
        self._after_logits(row, out.logits[0, -1])
        if not row.done:
            self._batch.add(output_cache(out), len(ids))
            self._active.append(row)

    def _decode_step(self) -> None:
        self._drop_stopped()
        rows = self._active
        if not rows:
            return
        plan = self._plan(rows, torch.tensor([[r.length] for r in rows]))
        try:
            logits = self.router.run(plan, self._batch.step, self.runtime.model, self._cache_arg,
                                     [r.pending for r in rows], [r.length for r in rows])
        except Exception as exc:  # a bug: fail every request of the batch, keep serving
            log.exception("decode step failed")
            self._fail_active(exc)
            return
        self.steps += 1
        traces, fires = self._step_features(rows, plan)
        for i, row in enumerate(rows):
            row.handle.steps += 1
            self._after_step(row, traces[i], fires[i], logits[i])
        self._compact()

    def _step_features(self, rows: list[_Row], plan: PassPlan) -> tuple[list[dict], list[dict]]:
        """Per row, for the token just fed: reported traces and fired features per dictionary."""
        traces: list[dict] = [{} for _ in rows]
        fires: list[dict] = [{} for _ in rows]
        if not plan.trace:  # encoded only to steer: nothing to report or count
            return traces, fires
        for dictionary_id, f in plan.features.items():
            for i, entry in enumerate(nonzero_rows(f[:, -1])):
                request = rows[i].request
                if request.traced and dictionary_id in request.filter.dictionaries:
                    traces[i][dictionary_id] = select(entry, request.filter)
                if rows[i].tallies:
                    fires[i][dictionary_id] = [fired(entry)]
        return traces, fires

    def _drop_stopped(self) -> None:
        now = time.monotonic()
        for row in self._active:
            if row.handle.cancelled:
                self._abandon(row, None)
            elif row.handle.expired(now):
                self._abandon(row, Expired("deadline exceeded"))
        self._compact()

    def _compact(self) -> None:
        keep = [i for i, row in enumerate(self._active) if not row.done]
        self._batch.keep(keep)
        self._active = [self._active[i] for i in keep]

    # ---- per-row state machine -------------------------------------------------------------
    def _after_step(self, row: _Row, traces: dict, fires: dict, logits: torch.Tensor) -> None:
        row.length += 1
        if row.request.traced:
            if row.tallies:
                self._count(row, fires)
            self._emit_generated(row, traces)
            if row.done:
                return
        self._after_logits(row, logits)

    def _after_logits(self, row: _Row, logits: torch.Tensor) -> None:
        token, logprob = sample_token(logits, row.request.sampling, row.generator)
        if token in self.runtime.eos_ids:
            return self._finish(row, "eos")
        if row.length >= self.runtime.context_length:
            return self._finish(row, "context_length")
        row.pending, row.pending_logprob, row.pending_position = token, logprob, row.length
        if not row.request.traced:
            self._emit_generated(row, {})

    def _emit_generated(self, row: _Row, features: dict[str, SparseTrace]) -> None:
        text = row.detok.push(row.pending)
        if row.first_token_at is None:
            row.first_token_at = time.monotonic()
        row.generated += 1
        self._outbox.put(row.handle, TokenOut(row.pending, text, row.pending_logprob,
                                              row.pending_position, False, features))
        stop = row.stops.push(text)
        if stop is not None:
            self._finish(row, "stop", stop)
        elif row.generated >= row.request.max_new_tokens:
            self._finish(row, "length")

    def _prompt_tokens(self, ids: torch.Tensor, logits: torch.Tensor,
                       entries: dict[str, list[SparseTrace]], filt: FeatureFilter
                       ) -> list[TokenOut]:
        """Tokens ids [T] of one sequence with their logprobs (logits [T, vocab]) and traces
        (`entries`: per dictionary, the `nonzero_rows` of its features [T, d_sae])."""
        logprobs = [0.0, *torch.log_softmax(logits[:-1].float(), dim=-1)
                    .gather(1, ids[1:, None]).flatten().tolist()]
        traces = _position_traces(entries, filt, len(ids))
        detok = Detokenizer(self.runtime.tokenizer)
        return [TokenOut(token, detok.push(token), logprobs[pos], pos, True, traces[pos])
                for pos, token in enumerate(ids.tolist())]

    def _count(self, row: _Row, fires: dict[str, list]) -> None:
        """Add fired features (per dictionary, one entry per token) to the row's tallies."""
        for dictionary_id, tally in row.tallies.items():
            tally.add(fires[dictionary_id])
        if next(iter(row.tallies.values())).tokens >= self.chunk_tokens:
            self._publish(row, final=False)

    def _publish(self, row: _Row, final: bool) -> None:
        for dictionary_id, tally in row.tallies.items():
            text = row.request.prompt if self.publish_prompt_text and tally.chunk_index == 0 else ""
            event = tally.flush(request_id=row.request.request_id, dictionary_id=dictionary_id,
                                model_id=self.runtime.binding.model_id, final=final,
                                prompt_text=text)
            self.publish(dictionary_id, event.SerializeToString())

    def _finish(self, row: _Row, reason: str, stop: str = "") -> None:
        row.done = True
        self._publish(row, final=True)
        now, start = time.monotonic(), row.handle.accepted
        self._outbox.put(row.handle, GenerationSummary(
            request_id=row.request.request_id, finish_reason=reason,
            prompt_tokens=len(row.request.prompt_ids), generated_tokens=row.generated,
            time_to_first_token_s=(row.first_token_at or now) - start, total_s=now - start,
            seed=row.request.sampling.seed, stop=stop))
        self._outbox.put(row.handle, END)

    def _abandon(self, row: _Row, error: Exception | None) -> None:
        """Stop a cancelled or expired row; the tokens it ran still reach the monitor."""
        row.done = True
        self._publish(row, final=True)
        if error is not None:
            self._outbox.put(row.handle, error)

    # ---- Trace -----------------------------------------------------------------------------
    def _run_trace(self, job: TraceJob) -> None:
        try:
            job.resolve(self._trace_tokens(job.request))
        except Exception as exc:  # a bug: report it to this caller only
            log.exception("trace failed")
            job.resolve(exc)

    def _trace_tokens(self, request: TraceRequest) -> list[TokenOut]:
        ids = torch.tensor([request.token_ids])
        plan = PassPlan(positions=torch.arange(ids.shape[1]).unsqueeze(0))
        out = self.router.run(plan, self.runtime.model, input_ids=ids, use_cache=False)
        self.steps += 1
        entries = {d: nonzero_rows(plan.features[d][0]) for d in request.filter.dictionaries}
        return self._prompt_tokens(ids[0], out.logits[0], entries, request.filter)


def _position_traces(entries: dict[str, list[SparseTrace]], filt: FeatureFilter, n: int
                     ) -> list[dict[str, SparseTrace]]:
    """Per position of one sequence of n tokens (its `nonzero_rows` per dictionary): reported
    traces."""
    per_dict = {d: [select(e, filt) for e in entries[d]] for d in filt.dictionaries}
    return [{d: traces[i] for d, traces in per_dict.items()} for i in range(n)]
