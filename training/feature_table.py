"""The `features.parquet` / `neurons.parquet` table: one row per feature (or neuron).

Columns (polars dtypes), the contract with the feature browser, the inference service's feature
lookup and `featurewatch features`:
  feature u32, density f64, mean_activation f64, max_activation f64, label str,
  interp_score f64 (null = not scored), act_hist_edges list[f64], act_hist_counts list[i64],
  top_examples / interval_examples list[struct{tokens list[str], activations list[f64],
  center i32, max_activation f64, interval str}], logit_pos_tokens list[str],
  logit_pos_values list[f64], logit_neg_tokens list[str], logit_neg_values list[f64].
Nested columns are assembled from flat numpy arrays with Arrow offsets (no per-token Python
objects), so tables of 16k features × dozens of examples build in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from featurewatch.errors import BundleError
from featurewatch.training.feature_stats import BasicStats, ExampleSet
from featurewatch.training.logit_effects import LogitEffects

EXAMPLE_FIELDS = ("tokens", "activations", "center", "max_activation", "interval")


@dataclass
class CodeTable:
    """Everything one table row needs, for all d codes at once."""

    stats: BasicStats
    hist_edges: np.ndarray   # [d, bins + 1]
    hist_counts: np.ndarray  # [d, bins]
    top: ExampleSet
    intervals: ExampleSet
    logits: LogitEffects
    labels: list[str]
    scores: np.ndarray       # [d], NaN = not scored


def _lists(offsets: np.ndarray, values: pa.Array) -> pa.Array:
    return pa.LargeListArray.from_arrays(pa.array(offsets.astype(np.int64)), values)


def _examples_column(examples: ExampleSet, d: int, vocab: pa.Array) -> pa.Array:
    tokens = vocab.take(pa.array(examples.tokens, type=pa.int64()))
    struct = pa.StructArray.from_arrays([
        _lists(examples.offsets, tokens),
        _lists(examples.offsets, pa.array(examples.activations.astype(np.float64))),
        pa.array(examples.center.astype(np.int32)),
        pa.array(examples.value.astype(np.float64)),
        pa.array(examples.interval, type=pa.large_string()),
    ], names=list(EXAMPLE_FIELDS))
    return _lists(examples.feature_offsets(d), struct)


def _matrix_column(values: np.ndarray, keep: np.ndarray, dtype) -> pa.Array:
    """Rows of a [d, k] matrix as lists; rows where `keep` is False become empty lists."""
    lengths = np.where(keep, values.shape[1], 0)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = values[keep].reshape(-1)
    return _lists(offsets, pa.array(flat, type=dtype))


def build_table(table: CodeTable, vocab: list[str]) -> pl.DataFrame:
    """The polars table of `table` (dead codes get empty histograms and logit lists kept)."""
    d = len(table.labels)
    vocab_arr = pa.array(vocab, type=pa.large_string())
    live = table.stats.density > 0
    logits = table.logits
    columns = {
        "feature": pa.array(np.arange(d, dtype=np.uint32)),
        "density": pa.array(table.stats.density.astype(np.float64)),
        "mean_activation": pa.array(table.stats.mean_activation.astype(np.float64)),
        "max_activation": pa.array(table.stats.max_activation.astype(np.float64)),
        "label": pa.array(table.labels, type=pa.large_string()),
        "interp_score": pa.array(table.scores.astype(np.float64),
                                 mask=np.isnan(table.scores)),
        "act_hist_edges": _matrix_column(table.hist_edges.astype(np.float64), live, pa.float64()),
        "act_hist_counts": _matrix_column(table.hist_counts.astype(np.int64), live, pa.int64()),
        "top_examples": _examples_column(table.top, d, vocab_arr),
        "interval_examples": _examples_column(table.intervals, d, vocab_arr),
    }
    everyone = np.ones(d, dtype=bool)
    for side, ids, values in (("pos", logits.pos_ids, logits.pos_values),
                              ("neg", logits.neg_ids, logits.neg_values)):
        k = ids.shape[1]
        offsets = np.arange(0, d * k + 1, k)
        columns[f"logit_{side}_tokens"] = _lists(offsets, vocab_arr.take(
            pa.array(ids.reshape(-1), type=pa.int64())))
        columns[f"logit_{side}_values"] = _matrix_column(values.astype(np.float64), everyone,
                                                         pa.float64())
    return pl.from_arrow(pa.table(columns))


def write_table(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write a table atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    tmp.replace(path)
    return path


def read_table(path: str | Path, columns: list[str] | None = None) -> pl.DataFrame:
    """Read a features/neurons table (only `columns`, if given); BundleError naming the file
    if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: file is missing; run `featurewatch train analyze` first")
    try:
        return pl.read_parquet(path, columns=columns)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BundleError(f"{path}: cannot read the feature table ({exc})") from None
