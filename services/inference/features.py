"""A dictionary's features.parquet as the service reads it: lookup, label search, max activation.

The table is produced by the analysis step (`featurewatch train analyze`); a bundle without it
still serves, with empty labels and statistics.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from featurewatch.errors import BundleError
from featurewatch.training.feature_table import read_table

SUMMARY_COLUMNS = ("feature", "label", "density", "max_activation", "interp_score")


class FeatureTable:
    """Rows of features.parquet indexed by feature id (rows may be missing for some ids)."""

    def __init__(self, d_sae: int, frame: pl.DataFrame | None = None,
                 path: Path | None = None) -> None:
        self.d_sae = d_sae
        self.path = path
        self.frame = frame
        self._row_of = np.full(d_sae, -1, dtype=np.int64)
        self._max = np.full(d_sae, np.nan)
        self._labels = [""] * d_sae
        if frame is not None:
            self._index(frame)

    @classmethod
    def read(cls, path: Path, d_sae: int) -> FeatureTable:
        """Load `path` if it exists (else an empty table); BundleError if it is unreadable."""
        if not path.is_file():
            return cls(d_sae)
        frame = read_table(path)
        if "feature" not in frame.columns:
            raise BundleError(f"{path}: missing column 'feature'")
        return cls(d_sae, frame, path)

    def _index(self, frame: pl.DataFrame) -> None:
        ids = frame["feature"].to_numpy().astype(np.int64)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.d_sae):
            raise BundleError(f"{self.path}: column 'feature' holds ids outside 0..{self.d_sae - 1}")
        self._row_of[ids] = np.arange(len(ids))
        if "max_activation" in frame.columns:
            self._max[ids] = frame["max_activation"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        if "label" in frame.columns:
            for feature, label in zip(ids.tolist(), frame["label"].to_list(), strict=True):
                self._labels[feature] = label or ""

    @property
    def present(self) -> bool:
        """Whether the bundle has a features.parquet."""
        return self.frame is not None

    def label(self, feature: int) -> str:
        """The feature's label ("" when unknown)."""
        return self._labels[feature]

    def max_activation(self, feature: int) -> float | None:
        """Largest activation observed during analysis; None when unknown or never fired."""
        value = float(self._max[feature])
        return value if math.isfinite(value) and value > 0 else None

    def row(self, feature: int) -> dict[str, Any] | None:
        """Every column of the feature's row, or None when the table has no row for it."""
        index = int(self._row_of[feature])
        if self.frame is None or index < 0:
            return None
        return self.frame.row(index, named=True)

    def search(self, query: str) -> list[int]:
        """Feature ids whose label contains `query` (case-insensitive); all ids when empty."""
        if not query:
            return list(range(self.d_sae))
        needle = query.casefold()
        return [i for i, label in enumerate(self._labels) if needle in label.casefold()]

    def summaries(self, features: list[int]) -> list[dict[str, Any]]:
        """Label and headline statistics of `features` (missing values are None)."""
        out = []
        for feature in features:
            row = self.row(feature) or {}
            out.append({c: row.get(c) for c in SUMMARY_COLUMNS} | {"feature": feature,
                                                                 "label": self.label(feature)})
        return out
