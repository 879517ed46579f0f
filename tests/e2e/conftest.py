"""The tiny artifacts, trained once per session and shared by every e2e test."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from featurewatch.stack import featurewatch_argv


@dataclass(frozen=True)
class TinyTraining:
    """`featurewatch train all --preset tiny` as it ran: its artifacts and its output."""

    artifacts: Path
    result: subprocess.CompletedProcess


@pytest.fixture(scope="session")
def tiny_training(tmp_path_factory: pytest.TempPathFactory) -> TinyTraining:
    artifacts = tmp_path_factory.mktemp("tiny") / "artifacts"
    result = subprocess.run(
        featurewatch_argv("train", "all", "--preset", "tiny", "--artifacts", str(artifacts),
                          "--quiet"),
        capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"tiny training failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return TinyTraining(artifacts, result)
