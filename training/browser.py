"""The static feature browser of a dictionary bundle: `<bundle>/browser/`, opened from disk.

The site must work from file:// without a server, where fetch() of local files is blocked, so
all data is JavaScript: `data/index.js` sets `window.FEATUREWATCH_INDEX` (metadata plus one
column per list field for every feature and neuron) and `data/<kind>_NNN.js` calls
`featurewatchChunk(kind, n, records)` with the full pages of `chunk_size` consecutive rows. The
app inserts a chunk's <script> tag only when one of its pages is opened, so 16k features cost
one small index up front. Records are arrays, not objects, to keep the chunk files small:

    record   = {"feature", "hist": [edges, counts], "top": [example...], "intervals": [...],
                "pos": [[token, value]...], "neg": [...], "splits": {"children", "parents"}}
    example  = [tokens, activations, center, max_activation, interval]

Numbers are written with DIGITS significant digits (the value shown and put in data-activation).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from featurewatch.errors import BundleError
from featurewatch.training.bundle import BROWSER_DIR, CFG_FILE, FEATURES_FILE, METRICS_FILE

NEURONS_FILE = "neurons.parquet"
ANALYSIS_FILE = "analysis.json"
TABLES = {"features": FEATURES_FILE, "neurons": NEURONS_FILE}
ASSETS = ("index.html", "style.css", "core.js", "feature.js", "app.js")
CHUNK_SIZE = 256
DIGITS = 6
REQUIRED_COLUMNS = (
    "feature", "density", "mean_activation", "max_activation", "label", "interp_score",
    "act_hist_edges", "act_hist_counts", "top_examples", "interval_examples",
    "logit_pos_tokens", "logit_pos_values", "logit_neg_tokens", "logit_neg_values",
)
METRIC_KEYS = ("mse", "fvu", "l0", "loss_recovered", "dead", "ultralow", "dense")


def write_browser(bundle_dir: str | Path, *, report: Mapping | str | Path | None = None,
                  chunk_size: int = CHUNK_SIZE,
                  tables: Mapping[str, pl.DataFrame] | None = None) -> Path:
    """Write `<bundle>/browser/` and return its index.html.

    `report` is the run analysis (analysis.json's content, its path, or the report directory
    holding it); by default the run's `report/analysis.json` next to `dictionaries/` is used
    when it exists. `tables` ("features" / "neurons") are tables the caller already read from
    the bundle, so they are not read again. Missing inputs are listed on the page instead of
    failing.
    """
    bundle = Path(bundle_dir)
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: dictionary bundle directory does not exist")
    if chunk_size < 1:
        raise BundleError(f"chunk_size={chunk_size}: must be at least 1")
    out = bundle / BROWSER_DIR
    data_dir = out / "data"
    if data_dir.exists():
        shutil.rmtree(data_dir)  # stale chunks of a larger earlier table must not linger
    data_dir.mkdir(parents=True)
    _copy_assets(out)
    meta, missing = _bundle_meta(bundle)
    analysis, report_dir = _load_analysis(report, bundle, missing)
    splits = _split_links(analysis, meta["dictionary_id"], bundle, out)
    kinds: dict[str, Any] = {}
    for kind, filename in TABLES.items():
        path = bundle / filename
        if not path.is_file():
            missing.append({"file": filename, "why": f"no {kind} statistics: run "
                            "`featurewatch train analyze` to compute them"})
            continue
        given = (tables or {}).get(kind)
        table = _read_table(path) if given is None else _checked(given, path)
        kinds[kind] = _write_kind(table, data_dir, kind, chunk_size,
                                  splits if kind == "features" else None)
    meta["missing"] = missing
    meta["report_href"] = _relative(report_dir / "index.html", out) if report_dir else None
    meta["split_dictionaries"] = splits["dictionaries"]
    index = {"meta": meta, "chunk_size": chunk_size, "kinds": kinds}
    _write_js(data_dir / "index.js", f"window.FEATUREWATCH_INDEX = {_dumps(index)};\n")
    return out / "index.html"


def _copy_assets(out: Path) -> None:
    assets = resources.files("featurewatch.training").joinpath("browser_assets")
    for name in ASSETS:
        (out / name).write_bytes(assets.joinpath(name).read_bytes())


def _read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def _bundle_meta(bundle: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Dictionary id, shape and headline metrics, plus the list of missing files."""
    missing: list[dict[str, str]] = []
    cfg: dict[str, Any] = {}
    if (bundle / CFG_FILE).is_file():
        cfg = _read_json_file(bundle / CFG_FILE)
    else:
        missing.append({"file": CFG_FILE, "why": "dictionary configuration not found"})
    metrics: dict[str, Any] = {}
    if (bundle / METRICS_FILE).is_file():
        metrics = _read_json_file(bundle / METRICS_FILE)
    else:
        missing.append({"file": METRICS_FILE, "why": "no evaluation: run the evaluate step"})
    fw = cfg.get("featurewatch") or {}
    meta = {
        "dictionary_id": fw.get("dictionary_id") or bundle.name,
        "model_id": fw.get("model_id") or cfg.get("model_name"),
        "hook_point": fw.get("hook_point") or cfg.get("hook_name"),
        "architecture": cfg.get("architecture"), "d_in": cfg.get("d_in"),
        "d_sae": cfg.get("d_sae"),
        "metrics": {k: _num(metrics[k]) for k in METRIC_KEYS if isinstance(metrics.get(k), int | float)},
    }
    return meta, missing


def _load_analysis(report: Mapping | str | Path | None, bundle: Path,
                   missing: list[dict[str, str]]) -> tuple[Mapping | None, Path | None]:
    """The run analysis and the report directory it came from (either may be None)."""
    default_dir = bundle.parent.parent / "report"  # artifacts/dictionaries/<id> -> report/
    if isinstance(report, Mapping):
        # the run report is written next to analysis.json, possibly after the browsers
        has_report = (default_dir / "index.html").is_file() or (default_dir / ANALYSIS_FILE).is_file()
        return report, (default_dir if has_report else None)
    if report is None:
        report_dir = default_dir
        path = report_dir / ANALYSIS_FILE
    else:
        path = Path(report)
        path = path / ANALYSIS_FILE if path.is_dir() else path
        report_dir = path.parent
        if not path.is_file():
            raise BundleError(f"{path}: analysis file does not exist")
    if not path.is_file():
        missing.append({"file": ANALYSIS_FILE, "why": "no run analysis: feature splits "
                        "across dictionary sizes are not shown"})
        return None, (report_dir if (report_dir / "index.html").is_file() else None)
    analysis = _read_json_file(path)
    if not isinstance(analysis, dict):
        raise BundleError(f"{path}: must hold a JSON object")
    return analysis, report_dir


def _split_links(analysis: Mapping | None, dictionary_id: str, bundle: Path,
                 out: Path) -> dict[str, Any]:
    """Per-feature links to split children (larger dictionary) and parents (smaller one)."""
    result: dict[str, Any] = {"dictionaries": [], "children": {}, "parents": {}}
    splits = (analysis or {}).get("splits") or {}
    sizes = {d.get("id"): d.get("d_sae") for d in (analysis or {}).get("dictionaries") or []
             if isinstance(d, Mapping)}
    for other in splits.get("dictionaries") or []:
        href = _relative(bundle.parent / str(other) / BROWSER_DIR / "index.html", out)
        result["dictionaries"].append({"id": other, "d_sae": sizes.get(other), "href": href,
                                       "current": other == dictionary_id})
    for link in splits.get("links") or []:
        try:
            source, feature, target = link["from"], int(link["feature"]), link["to"]
            children = [(int(j), float(sim)) for j, sim in link["children"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{ANALYSIS_FILE}: malformed entry in 'splits.links': "
                              f"{link!r} ({exc})") from None
        if source == dictionary_id:
            result["children"].setdefault(feature, []).extend(
                [target, j, _num(sim)] for j, sim in children)
        if target == dictionary_id:
            for j, sim in children:
                result["parents"].setdefault(j, []).append([source, feature, _num(sim)])
    return result


def _relative(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


def _read_table(path: Path) -> pl.DataFrame:
    """Read a feature table, checking the columns the browser needs; sorted by feature."""
    try:
        table = pl.read_parquet(path)
    except Exception as exc:  # noqa: BLE001 - polars raises several types for corrupt files
        raise BundleError(f"{path}: cannot read parquet ({exc})") from None
    return _checked(table, path)


def _checked(table: pl.DataFrame, path: Path) -> pl.DataFrame:
    """`table` (read from `path`) checked for the columns the browser needs; sorted by feature."""
    for column in REQUIRED_COLUMNS:
        if column not in table.columns:
            raise BundleError(f"{path}: missing column {column!r}")
    if table["feature"].null_count() or table["feature"].n_unique() != table.height:
        raise BundleError(f"{path}: column 'feature' must hold unique, non-null ids")
    return table.sort("feature")


def _write_kind(table: pl.DataFrame, data_dir: Path, kind: str, chunk_size: int,
                splits: dict[str, Any] | None) -> dict[str, Any]:
    """Write the chunk files of one table; return its list columns for the index."""
    for n, start in enumerate(range(0, table.height, chunk_size)):
        rows = table.slice(start, chunk_size).to_dicts()
        records = [_record(row, splits) for row in rows]
        _write_js(data_dir / f"{kind}_{n:03d}.js",
                  f"featurewatchChunk({json.dumps(kind)}, {n}, {_dumps(records)});\n")
    return {
        "count": table.height,
        "feature": table["feature"].to_list(),
        "label": [label or "" for label in table["label"].to_list()],
        **{col: [_num(v) for v in table[col].to_list()]
           for col in ("density", "mean_activation", "max_activation", "interp_score")},
    }


def _record(row: dict[str, Any], splits: dict[str, Any] | None) -> dict[str, Any]:
    """One feature page's data (see the module docstring for the layout)."""
    feature = int(row["feature"])
    record: dict[str, Any] = {
        "feature": feature,
        "hist": [_nums(row["act_hist_edges"]), [int(c) for c in row["act_hist_counts"] or []]],
        "top": [_example(e) for e in row["top_examples"] or []],
        "intervals": [_example(e) for e in row["interval_examples"] or []],
        "pos": _logits(row["logit_pos_tokens"], row["logit_pos_values"]),
        "neg": _logits(row["logit_neg_tokens"], row["logit_neg_values"]),
    }
    if splits is not None:
        record["splits"] = {"children": splits["children"].get(feature, []),
                            "parents": splits["parents"].get(feature, [])}
    return record


def _example(example: dict[str, Any]) -> list[Any]:
    tokens = [t if t is not None else "" for t in example.get("tokens") or []]
    return [tokens, _nums(example.get("activations")), example.get("center"),
            _num(example.get("max_activation")), example.get("interval") or ""]


def _logits(tokens: list[str] | None, values: list[float] | None) -> list[list[Any]]:
    return [[t or "", _num(v)] for t, v in zip(tokens or [], values or [], strict=False)]


def _nums(values: list[float] | None) -> list[float | int | None]:
    return [_num(v) for v in values or []]


def _num(value: float | int | None) -> float | int | None:
    """`value` at DIGITS significant digits; NaN/inf become null (JSON has no NaN)."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0
    rounded = float(f"{value:.{DIGITS}g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1e15 else rounded


def _dumps(data: Any) -> str:
    # ASCII-only: a classic script's bytes then decode the same whatever charset is assumed.
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _write_js(path: Path, text: str) -> None:
    path.write_text(text, encoding="ascii")
