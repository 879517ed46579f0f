"""Which dictionaries the monitor knows, their d_sae and training-time feature densities.

A dictionary is known from its bundle (`--dictionary DIR`: cfg.json read with json, never
torch) or, when only its events arrive, from the d_sae those events carry (stored in the
dictionary's `meta` hash so every replica agrees).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from featurewatch.contracts import DICTIONARIES_KEY, dictionary_key
from featurewatch.errors import BundleError

CFG_FILE = "cfg.json"
METRICS_FILE = "metrics.json"
FEATURES_FILE = "features.parquet"


@dataclass(frozen=True)
class DictionaryInfo:
    """What the monitor needs from a dictionary bundle."""

    dictionary_id: str
    d_sae: int
    model_id: str = ""
    density: np.ndarray | None = None
    """Training-time fraction of tokens on which each feature fired, [d_sae], or None."""


def meta_key(dictionary_id: str) -> str:
    """Hash with the dictionary's d_sae (and model_id), shared by all replicas."""
    return dictionary_key(dictionary_id, "meta")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: must hold a JSON object")
    return data


def _check_density(values, d_sae: int, where: str) -> np.ndarray:
    density = np.asarray(values, dtype=np.float64)
    if density.shape != (d_sae,):
        raise BundleError(f"{where}: has {density.size} densities but d_sae={d_sae}")
    if not np.all(np.isfinite(density)) or density.min() < 0 or density.max() > 1:
        raise BundleError(f"{where}: densities must be fractions in [0, 1]")
    return density


def _training_density(path: Path, d_sae: int) -> np.ndarray | None:
    metrics_path = path / METRICS_FILE
    if metrics_path.is_file():
        metrics = _read_json(metrics_path)
        if isinstance(metrics.get("feature_density"), list):
            return _check_density(metrics["feature_density"], d_sae,
                                  f"{metrics_path} field 'feature_density'")
    features_path = path / FEATURES_FILE
    if features_path.is_file():
        import polars as pl  # only needed for bundles without metrics.json densities

        try:
            column = pl.read_parquet(features_path, columns=["density"])["density"]
        except Exception as exc:  # noqa: BLE001 - polars raises many types for bad files
            raise BundleError(f"{features_path}: cannot read column 'density' ({exc})") from None
        return _check_density(column.fill_null(0.0).to_numpy(), d_sae,
                              f"{features_path} column 'density'")
    return None


def read_bundle_info(path: str | Path) -> DictionaryInfo:
    """Read a bundle directory's id, d_sae, model id and training densities (if recorded)."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: dictionary bundle directory does not exist")
    cfg = _read_json(path / CFG_FILE)
    d_sae = cfg.get("d_sae")
    if not isinstance(d_sae, int) or isinstance(d_sae, bool) or d_sae <= 0:
        raise BundleError(f"{path / CFG_FILE}: field 'd_sae'={d_sae!r} must be a positive "
                          "integer")
    fw = cfg.get("featurewatch") if isinstance(cfg.get("featurewatch"), dict) else {}
    dictionary_id = str(fw.get("dictionary_id") or path.name)
    model_id = str(fw.get("model_id") or cfg.get("model_name") or "")
    return DictionaryInfo(dictionary_id, d_sae, model_id, _training_density(path, d_sae))


class DictionaryRegistry:
    """Bundles given at start-up plus dictionaries announced in Redis."""

    def __init__(self, client: redis.Redis, bundles: list[DictionaryInfo]) -> None:
        self.client = client
        self.bundles = {info.dictionary_id: info for info in bundles}
        if len(self.bundles) != len(bundles):
            ids = sorted(info.dictionary_id for info in bundles)
            raise BundleError(f"two --dictionary bundles share a dictionary id: {ids}")

    def publish(self) -> None:
        """Record the bundles' d_sae in Redis so replicas without the bundle agree."""
        for info in self.bundles.values():
            self.client.hset(meta_key(info.dictionary_id),
                             mapping={"d_sae": info.d_sae, "model_id": info.model_id})

    def ids(self) -> list[str]:
        """Every dictionary to watch: configured ones and those that published events."""
        announced = {m.decode() for m in self.client.smembers(DICTIONARIES_KEY)}
        return sorted(announced | set(self.bundles))

    def d_sae(self, dictionary_id: str) -> int | None:
        """The dictionary's d_sae, or None while it is unknown."""
        if dictionary_id in self.bundles:
            return self.bundles[dictionary_id].d_sae
        value = self.client.hget(meta_key(dictionary_id), "d_sae")
        return int(value) if value is not None else None

    def learn_d_sae(self, dictionary_id: str, d_sae: int) -> int:
        """Record d_sae from an event unless one is known; returns the value that holds."""
        known = self.d_sae(dictionary_id)
        if known is not None:
            return known
        self.client.hsetnx(meta_key(dictionary_id), "d_sae", d_sae)
        return int(self.client.hget(meta_key(dictionary_id), "d_sae"))

    def density(self, dictionary_id: str) -> np.ndarray | None:
        """Training-time densities of a configured bundle, else None."""
        info = self.bundles.get(dictionary_id)
        return None if info is None else info.density

