"""Training checkpoints of a dictionary: written atomically, found again by step number.

A checkpoint holds everything that decides the rest of the run (weights, optimizer moments,
the trainer's RNG state, the step — which is also the position in the data order — and the
feature fire tracking) plus a fingerprint of the configuration and the data, so a checkpoint
of a different run in the same directory is never resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_GLOB = "step_*.pt"
_STEP = re.compile(r"step_(\d+)\.pt$")
KEEP = 2


def fingerprint(values: dict[str, Any]) -> str:
    """A stable hash of JSON-able values (what a run depends on)."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, oldest first."""
    found = [p for p in directory.glob(CHECKPOINT_GLOB) if _STEP.search(p.name)]
    return sorted(found, key=lambda p: int(_STEP.search(p.name).group(1)))


def save_checkpoint(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """Write `state` as step_<step>.pt (via a temporary file) and keep the last KEEP."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"step_{step:09d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in checkpoints(directory)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def load_latest(directory: Path | None, expect: str) -> dict[str, Any] | None:
    """The newest checkpoint whose fingerprint is `expect`, or None."""
    if directory is None or not directory.is_dir():
        return None
    for path in reversed(checkpoints(directory)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except (OSError, RuntimeError, EOFError):
            continue  # a torn write from a crash: fall back to the previous one
        if state.get("fingerprint") == expect:
            return state
    return None


def clear_checkpoints(directory: Path | None) -> int:
    """Delete the checkpoints in `directory` (of another run); returns how many."""
    if directory is None or not directory.is_dir():
        return 0
    stale = checkpoints(directory)
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
