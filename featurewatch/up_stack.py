"""What `featurewatch up` runs: the artifacts it needs (trained when missing), its run directory,
and the processes it starts under featurewatch.stack's supervisor."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import click

from featurewatch.errors import ConfigError
from featurewatch.stack import (
    ManagedProcess,
    Stack,
    alertmanager_process,
    featurewatch_argv,
    free_port,
    prometheus_process,
    redis_process,
)

RUN_MARKER = ".featurewatch-up"
STATE_FILE = "up.json"


@dataclass(frozen=True)
class Bundle:
    """A dictionary bundle bound to the served model."""

    dictionary_id: str
    path: Path
    d_sae: int

    @property
    def browser(self) -> Path:
        return self.path / "browser" / "index.html"


@dataclass(frozen=True)
class ArtifactSet:
    """The model directory and its complete dictionary bundles (largest first)."""

    model: Path
    bundles: tuple[Bundle, ...]

    def bundle(self, dictionary_id: str | None) -> Bundle:
        if dictionary_id is None:
            return self.bundles[0]
        for bundle in self.bundles:
            if bundle.dictionary_id == dictionary_id:
                return bundle
        raise ConfigError(f"--dictionary {dictionary_id!r} is not among the bundles "
                          f"{[b.dictionary_id for b in self.bundles]}")


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def find_artifacts(artifacts: Path) -> ArtifactSet | None:
    """The served model and its finished bundles (cfg, weights, features, browser), or None
    when the training job has not produced them all yet."""
    model = artifacts / "model"
    config = _json(model / "config.json")
    if config is None or not (model / "model.safetensors").is_file():
        return None
    model_id = config.get("featurewatch_model_id") or model.name
    bundles = []
    for cfg_path in sorted((artifacts / "dictionaries").glob("*/cfg.json")):
        cfg, path = _json(cfg_path), cfg_path.parent
        meta = (cfg or {}).get("featurewatch") or {}
        if meta.get("model_id") != model_id:
            continue  # bound to another model: the inference service would refuse it
        if not all((path / name).is_file() for name in
                   ("sae_weights.safetensors", "features.parquet", "browser/index.html")):
            return None
        bundles.append(Bundle(str(meta.get("dictionary_id") or path.name), path,
                              int(meta.get("d_sae") or cfg.get("d_sae") or 0)))
    if not bundles:
        return None
    bundles.sort(key=lambda b: (-b.d_sae, b.dictionary_id))
    return ArtifactSet(model, tuple(bundles))


def ensure_artifacts(artifacts: Path, preset: str, echo) -> ArtifactSet:
    """Reuse the artifacts when they are complete, else run `featurewatch train all`."""
    found = find_artifacts(artifacts)
    if found is not None:
        echo(f"reusing the trained artifacts in {artifacts}")
        return found
    echo(f"artifacts missing in {artifacts}: running `featurewatch train all --preset {preset}`")
    # A child process (not an import) so torch stays out of `up`, and its bars draw as usual.
    result = subprocess.run(featurewatch_argv("train", "all", "--preset", preset,
                                              "--artifacts", str(artifacts)), check=False)
    if result.returncode != 0:
        raise click.ClickException(f"training failed with exit status {result.returncode}")
    found = find_artifacts(artifacts)
    if found is None:
        raise click.ClickException(f"training finished but {artifacts} has no model with a "
                                   "complete dictionary bundle")
    return found


def prepare_run_dir(run_dir: Path) -> Path:
    """An empty run directory; only one made by `up` before (it has the marker) is wiped,
    so a mistyped --run-dir never deletes someone's files."""
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (run_dir / RUN_MARKER).is_file():
            raise ConfigError(f"--run-dir {run_dir} is not empty and was not made by "
                              "`featurewatch up`; choose another directory")
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).write_text("made by featurewatch up; wiped on its next start\n")
    return run_dir


def write_state(run_dir: Path, state: dict) -> None:
    """up.json: addresses, flags and the delivered alert, for scripts and tests (atomic)."""
    tmp = run_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, run_dir / STATE_FILE)


@dataclass(frozen=True)
class Ports:
    """Loopback ports of everything `up` starts (0 given on the command line = any free one)."""

    redis: int
    grpc: int
    inference_metrics: int
    monitor: int
    monitor_metrics: int
    prometheus: int
    alertmanager: int
    webhook: int

    @classmethod
    def resolve(cls, **ports: int) -> Ports:
        return cls(**{name: port or free_port() for name, port in ports.items()})


def start_core(stack: Stack, run_dir: Path, arts: ArtifactSet, ports: Ports,
               window_s: int) -> None:
    """redis-server, the inference service and the monitor, each ready before the next."""
    logs = run_dir / "logs"
    redis_url = f"redis://127.0.0.1:{ports.redis}/0"
    stack.start(redis_process(run_dir / "redis", ports.redis), timeout=60)
    dictionaries = [arg for b in arts.bundles for arg in ("--dictionary", str(b.path))]
    stack.start(ManagedProcess("inference", featurewatch_argv(
        "serve", "inference", "--model", str(arts.model), *dictionaries, "--host", "127.0.0.1",
        "--port", str(ports.grpc), "--metrics-port", str(ports.inference_metrics),
        "--redis-url", redis_url), logs / "inference.log", ports.grpc), timeout=300)
    config = run_dir / "monitor.toml"
    # Demo-sized windows: a few seconds of traffic must show in the rates, drift and alerts.
    config.write_text("[monitor]\nbucket_s = 5\nretention_s = 900\n"
                      f"window_s = {window_s}\ndrift_min_tokens = 100\nblock_ms = 200\n"
                      'consumer_name = "up"\n', encoding="utf-8")
    stack.start(ManagedProcess("monitor", featurewatch_argv(
        "serve", "monitor", "--config", str(config), "--redis-url", redis_url, *dictionaries,
        "--host", "127.0.0.1", "--port", str(ports.monitor),
        "--metrics-port", str(ports.monitor_metrics)), logs / "monitor.log",
        ports.monitor_metrics, ready_url=f"http://127.0.0.1:{ports.monitor_metrics}/metrics"),
        timeout=120)


def start_prometheus(stack: Stack, run_dir: Path, config: Path, port: int) -> ManagedProcess:
    return stack.start(prometheus_process(config, run_dir / "prometheus", port), timeout=120)


def start_alertmanager(stack: Stack, run_dir: Path, config: Path, port: int) -> ManagedProcess:
    return stack.start(alertmanager_process(config, run_dir / "alertmanager", port), timeout=120)
