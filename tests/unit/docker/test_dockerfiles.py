"""docker/: one Dockerfile per image; what they copy exists, the monitor image has no torch."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
IMAGES = ("training", "inference", "monitor")


def dockerfile(image: str) -> str:
    return (ROOT / "docker" / f"{image}.Dockerfile").read_text()


@pytest.mark.parametrize("image", IMAGES)
def test_copied_sources_exist_and_are_not_ignored(image):
    text = dockerfile(image)
    sources = [s for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M)
               for s in line.split()[:-1]]
    assert sources
    ignore = (ROOT / "docker" / f"{image}.Dockerfile.dockerignore").read_text()
    for source in sources:
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}" in ignore.replace("/\n", "\n"), source


@pytest.mark.parametrize("image", IMAGES)
def test_runs_as_non_root_with_the_featurewatch_entrypoint(image):
    text = dockerfile(image)
    assert re.search(r"^USER 10001$", text, re.M)
    assert 'ENTRYPOINT ["featurewatch"]' in text


def test_torch_pin_matches_pyproject_and_monitor_has_none():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pin = next(d for d in deps if d.startswith("torch=="))
    for image in ("training", "inference"):
        assert f"pip install --no-cache-dir {pin} " in dockerfile(image)
    monitor = dockerfile("monitor")
    assert "torch==" not in monitor and "--no-deps /wheels" in monitor
    assert "'torch' not in sys.modules" in monitor


def test_kubernetes_uses_these_images():
    for image in IMAGES:
        assert f"image: featurewatch-{image}" in "".join(
            p.read_text() for p in (ROOT / "k8s" / "base").glob("*.yaml"))
