"""The step runner: run a training step unless its inputs and config are unchanged.

Each step names the files it reads, its config, and the files it must leave behind. Before a
step runs, the runner hashes its inputs (sha256 of content, cached by size and mtime so a large
file is not re-read) together with the config; if that fingerprint equals the one recorded in
`artifacts/state.json` for the last successful run and every output still exists, the step is
skipped. `force=True` reruns regardless.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurewatch.errors import ConfigError

STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True)
class Artifacts:
    """Paths of the artifacts directory (see the brief's layout)."""

    root: Path

    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def state(self) -> Path:
        return self.root / STATE_FILE

    def activations(self, hook_point: str) -> Path:
        return self.root / "activations" / hook_point

    def dictionary(self, dictionary_id: str) -> Path:
        return self.root / "dictionaries" / dictionary_id


@dataclass
class Step:
    """One unit of work: what it reads, how it is configured, what it writes."""

    name: str
    run: Callable[[], dict[str, Any] | None]
    inputs: tuple[Path, ...] = ()
    config: Any = None
    outputs: tuple[Path, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    """Other things the result depends on (e.g. a listing of source files)."""
    missing_hint: str = ""
    """Said when an input is missing, e.g. which command makes it."""


@dataclass(frozen=True)
class StepResult:
    """What happened to a step: skipped or run, how long it took, its summary."""

    name: str
    skipped: bool
    seconds: float
    summary: dict[str, Any]


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    return value


def _digest(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class Pipeline:
    """Runs steps against an artifacts directory, recording fingerprints in state.json."""

    def __init__(self, artifacts: Artifacts, *, force: bool = False,
                 echo: Callable[[str], None] = print) -> None:
        self.artifacts, self.force, self.echo = artifacts, force, echo
        self.state = self._load_state()

    def _load_state(self) -> dict[str, Any]:
        path, empty = self.artifacts.state, {"version": STATE_VERSION, "steps": {}, "hashes": {}}
        if not path.is_file():
            return empty
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError:
            self.echo(f"warning: {path} is not valid JSON; every step will run")
            return empty
        return state if state.get("version") == STATE_VERSION else empty

    def _save_state(self) -> None:
        self.artifacts.root.mkdir(parents=True, exist_ok=True)
        tmp = self.artifacts.state.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        os.replace(tmp, self.artifacts.state)

    def file_hash(self, path: Path) -> str:
        """sha256 of a file, cached by (size, mtime) in state.json."""
        stat = path.stat()
        key = str(path.resolve())
        cached = self.state["hashes"].get(key)
        if cached and cached["size"] == stat.st_size and cached["mtime_ns"] == stat.st_mtime_ns:
            return cached["sha256"]
        sha = _file_sha256(path)
        self.state["hashes"][key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                                     "sha256": sha}
        return sha

    def fingerprint(self, step: Step) -> str:
        """Hash of the step's input contents, config and extra dependencies."""
        inputs = {}
        for path in step.inputs:
            if not path.is_file():
                hint = f"; {step.missing_hint}" if step.missing_hint else ""
                raise ConfigError(f"step {step.name!r} needs {path}, which does not exist{hint}")
            inputs[str(path)] = self.file_hash(path)
        return _digest({"inputs": inputs, "config": step.config, "extra": step.extra})

    def is_current(self, step: Step, fingerprint: str) -> bool:
        """True if the last successful run had this fingerprint and its outputs still exist."""
        record = self.state["steps"].get(step.name)
        return (record is not None and record.get("fingerprint") == fingerprint
                and all(p.exists() for p in step.outputs))

    def run(self, step: Step) -> StepResult:
        """Run `step` unless it is current; record its fingerprint after it succeeds."""
        fingerprint = self.fingerprint(step)
        if not self.force and self.is_current(step, fingerprint):
            record = self.state["steps"][step.name]
            self._save_state()  # keeps the refreshed hash cache
            self.echo(f"{step.name}: up to date (inputs and config unchanged), skipped")
            return StepResult(step.name, True, 0.0, record.get("summary", {}))
        self.state["steps"].pop(step.name, None)
        self._save_state()
        start = time.perf_counter()
        summary = step.run() or {}
        seconds = round(time.perf_counter() - start, 2)
        self.state["steps"][step.name] = {
            "fingerprint": fingerprint, "seconds": seconds, "summary": summary,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "outputs": [str(p) for p in step.outputs],
        }
        self._save_state()
        self.echo(f"{step.name}: done in {seconds:.1f} s")
        return StepResult(step.name, False, seconds, summary)
