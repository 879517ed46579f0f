"""The step runner: skips a step whose inputs and config are unchanged, reruns otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featurewatch.errors import ConfigError
from featurewatch.training.pipeline import Artifacts, Pipeline, Step


class Counter:
    """A step body that copies its input to its output and counts its runs."""

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst, self.runs = src, dst, 0

    def __call__(self) -> dict:
        self.runs += 1
        self.dst.write_text(self.src.read_text().upper())
        return {"chars": len(self.src.read_text())}


def _setup(tmp_path: Path):
    art = Artifacts(tmp_path / "artifacts")
    src = tmp_path / "in.txt"
    src.write_text("hello")
    body = Counter(src, tmp_path / "out.txt")
    return art, src, body


def _step(body: Counter, config=None, extra=None) -> Step:
    return Step("copy", body, inputs=(body.src,), config=config or {"upper": True},
                outputs=(body.dst,), extra=extra or {})


def test_skips_unchanged_and_reruns_on_any_change(tmp_path: Path) -> None:
    art, src, body = _setup(tmp_path)
    messages: list[str] = []
    result = Pipeline(art, echo=messages.append).run(_step(body))
    assert (result.skipped, result.summary, body.runs) == (False, {"chars": 5}, 1)
    # a new Pipeline reads state.json: unchanged → skipped, summary kept
    result = Pipeline(art, echo=messages.append).run(_step(body))
    assert (result.skipped, result.summary, body.runs) == (True, {"chars": 5}, 1)
    assert "copy: up to date" in messages[-1]
    Pipeline(art).run(_step(body, config={"upper": False}))        # config changed
    assert body.runs == 2
    src.write_text("hello world")                                   # input content changed
    Pipeline(art).run(_step(body, config={"upper": False}))
    assert body.runs == 3
    body.dst.unlink()                                               # output missing
    Pipeline(art).run(_step(body, config={"upper": False}))
    assert body.runs == 4
    Pipeline(art, force=True).run(_step(body, config={"upper": False}))
    assert body.runs == 5
    Pipeline(art).run(_step(body, config={"upper": False}, extra={"sources": "v2"}))
    assert body.runs == 6


def test_touching_a_file_without_changing_it_does_not_rerun(tmp_path: Path) -> None:
    art, src, body = _setup(tmp_path)
    Pipeline(art).run(_step(body))
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert Pipeline(art).run(_step(body)).skipped
    state = json.loads(art.state.read_text())
    assert state["steps"]["copy"]["outputs"] == [str(body.dst)]
    assert state["hashes"][str(src.resolve())]["mtime_ns"] == stat.st_mtime_ns + 10**9


def test_failed_step_is_not_recorded(tmp_path: Path) -> None:
    art, src, body = _setup(tmp_path)
    Pipeline(art).run(_step(body))

    def boom() -> dict:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        Pipeline(art).run(Step("copy", boom, inputs=(src,), config={"upper": 2},
                               outputs=(body.dst,)))
    assert "copy" not in json.loads(art.state.read_text())["steps"]
    assert not Pipeline(art).run(_step(body)).skipped


def test_missing_input_names_file_and_hint(tmp_path: Path) -> None:
    art, _, body = _setup(tmp_path)
    step = Step("lm", body, inputs=(tmp_path / "tokens" / "train.npy",),
                missing_hint="run `featurewatch train tokenizer` first")
    with pytest.raises(ConfigError, match=r"step 'lm' needs .*train.npy.*train tokenizer"):
        Pipeline(art).run(step)
    assert body.runs == 0


def test_corrupt_state_file_means_rerun(tmp_path: Path) -> None:
    art, _, body = _setup(tmp_path)
    Pipeline(art).run(_step(body))
    art.state.write_text("{not json")
    messages: list[str] = []
    assert not Pipeline(art, echo=messages.append).run(_step(body)).skipped
    assert "not valid JSON" in messages[0]
