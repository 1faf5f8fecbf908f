"""The report's numbers: one row per (image, method) from the records, the per-method summary, the CSV.

Choices worth knowing:
- Method order is kmeans first (the reference of the ratio columns), then alphabetical,
  unless ``method_order`` gives one (e.g. the config's); unlisted methods follow alphabetically.
- Best: the lowest ``ok`` score of an image; scores equal to it within :data:`TIE_RTOL`
  (relative) are best too. A sole best is a *win*, a shared one a *tie*: a 6-way tie is no
  win for anyone.
- Gap: ``(score - lower_bound) / max(lower_bound, SCORE_FLOOR)``, 0 at the bound. The floor
  (one score unit, e.g. an MSE of half a grey level squared) keeps a near-zero bound from
  turning noise into "gap 246,981%". Where even the image's best result is more than twice
  its bound (``best gap > LOOSE_GAP``), the bound says little about that image: its rows are
  flagged ``bound_loose``; the page shows no gap for them and the summary leaves them out.
- ``vs_best``: ``score / best - 1`` on the same image (0 for the best), floored like the gap.
- The score's parts: ``w_mse * mse``, ``w_max * max_cost``, ``w_mean * mean_cost``, with the
  record's weights (they sum to the score).
- Duplicate (image, method) records keep the last one (stubs naming neither are all kept).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from cq.record import SCORE_KEYS as RECORD_SCORE_KEYS
from cq.fsutil import atomic_path

REFERENCE = "kmeans"
TIE_RTOL = 1e-9
SCORE_FLOOR = 1.0
LOOSE_GAP = 1.0
DEFAULT_WEIGHTS = {"mse": 2.0, "max_cost": 21.0, "mean_cost": 42.0}
# The record's scores as read (cq.record's list), less its gap: the report computes its own.
SCORE_KEYS = tuple(key for key in RECORD_SCORE_KEYS if key != "gap")
PART_KEYS = ("part_mse", "part_max_cost", "part_mean_cost")
CSV_COLUMNS = ("image", "method", "base_method", "method_version", "scoring_version", "status", "error",
               *SCORE_KEYS, *PART_KEYS, "gap", "bound_loose", "vs_best", "ratio_to_kmeans", "best", "tie",
               "n_colors", "k", "width", "height", "wall_time_s", "peak_memory_mb", "device", "notes",
               "image_path", "created")
SUMMARY_COLUMNS = ("method", "images", "ok", "failures", "gap_median", "gap_geomean", "loose_images",
                   "vs_best_geomean", "ratio_to_kmeans_geomean", "wins", "ties", "median_time_s",
                   "total_time_s", "max_peak_memory_mb", "devices")


def image_key(path: str | None, input_dir: Path | None) -> str:
    """How an image is named in the report: its path relative to ``input_dir`` when under it.

    Tries the path as given, then both resolved (a relative record path against an absolute
    ``input_dir``); otherwise the path as recorded.
    """
    if not path:
        return "(unknown image)"
    if input_dir is not None:
        for p, base in ((Path(path), Path(input_dir)), (Path(path).resolve(), Path(input_dir).resolve())):
            try:
                return p.relative_to(base).as_posix()
            except ValueError:
                continue
    return str(path)


def identify(records: list[dict], input_dir: Path | None) -> list[tuple[str, str, str | None]]:
    """(image key, method, image path) of each record; each distinct path is resolved once."""
    keys, out = {}, []
    for record in records:
        image = as_dict(record.get("image"))
        path = str(image["path"]) if image.get("path") else None
        if path not in keys:
            keys[path] = image_key(path, input_dir)
        out.append((keys[path], str(record.get("method") or "(unknown method)"), path))
    return out


def as_dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def number(value) -> float:
    """A float, or NaN for None and anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _parts(scores: dict, weights: dict) -> dict:
    """The score's three weighted parts (NaN where the record lacks a term)."""
    w = {**DEFAULT_WEIGHTS, **{k: v for k, v in weights.items() if math.isfinite(number(v))}}
    return {f"part_{key}": float(w[key]) * number(scores.get(key)) for key in ("mse", "max_cost", "mean_cost")}


def _row(record: dict, identity: tuple[str, str, str | None]) -> dict:
    """One table row from a record, tolerating the missing keys of error stubs and older records."""
    image, scores = as_dict(record.get("image")), as_dict(record.get("scores"))
    key, method, path = identity
    notes = list(image.get("notes") or []) + list(record.get("notes") or [])
    row = {
        "image": key, "method": method,
        "base_method": record.get("base_method"), "method_version": record.get("method_version"),
        "scoring_version": record.get("scoring_version"),
        "status": "ok" if record.get("status") == "ok" else "error", "error": record.get("error"),
        **{part: number(scores.get(part)) for part in SCORE_KEYS},
        **_parts(scores, as_dict(record.get("weights"))),
        "n_colors": record.get("n_colors"), "k": record.get("k"),
        "width": image.get("width"), "height": image.get("height"),
        "wall_time_s": number(record.get("wall_time_s")), "peak_memory_mb": number(record.get("peak_memory_mb")),
        "device": record.get("device"), "notes": "; ".join(map(str, notes)) or None,
        "image_path": path, "created": record.get("created"),
    }
    if row["status"] == "error" and not row["error"]:
        row["error"] = "error (no message)"
    return row


def records_table(records: list[dict], input_dir: Path | None = None) -> pd.DataFrame:
    """One row per image x method: the record's scores, the score's parts, and the comparisons
    of the module docstring (gap, bound_loose, vs_best, ratio_to_kmeans, best, tie).

    Rows are sorted by image, then method; a duplicate (image, method) keeps the last record,
    except that stubs naming no image or no method are all kept (each is a different failure).
    """
    rows = [_row(r, identity) for r, identity in zip(records, identify(records, input_dir))]
    table = pd.DataFrame(rows, columns=[c for c in CSV_COLUMNS if c not in _DERIVED])
    unknown = table["image"].str.startswith("(unknown") | table["method"].str.startswith("(unknown")
    table = table[unknown | ~table.duplicated(["image", "method"], keep="last")].copy()
    _compare(table)
    for column in ("n_colors", "k", "width", "height"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    return table.sort_values(["image", "method"], kind="stable").reset_index(drop=True)[list(CSV_COLUMNS)]


_DERIVED = ("gap", "bound_loose", "vs_best", "ratio_to_kmeans", "best", "tie")


def _compare(table: pd.DataFrame) -> None:
    """Add the derived columns (see the module docstring) in place."""
    score = table["score"].where(table["status"] == "ok")
    by_image = score.groupby(table["image"])
    bound = table["lower_bound"]
    table["gap"] = (score - bound).clip(lower=0) / bound.clip(lower=SCORE_FLOOR)
    table["bound_loose"] = table["gap"].groupby(table["image"]).transform("min") > LOOSE_GAP
    best = by_image.transform("min")
    table["best"] = score.notna() & (score - best <= TIE_RTOL * best.abs())
    table["tie"] = table["best"] & (table["best"].groupby(table["image"]).transform("sum") > 1)
    table["vs_best"] = (score - best) / best.clip(lower=SCORE_FLOOR)
    reference = score.where(table["method"] == REFERENCE).groupby(table["image"]).transform("max")
    table["ratio_to_kmeans"] = score / reference.where(reference > 0)


def ordered_methods(names, preferred: list[str] | None = None) -> list[str]:
    """Stable method order: ``preferred`` first (those present), else kmeans; then alphabetical."""
    names = set(names)
    head = [m for m in (preferred if preferred is not None else [REFERENCE]) if m in names]
    return head + sorted(names - set(head))


def geomean(values: pd.Series) -> float:
    """Geometric mean of the positive finite values (NaN when none)."""
    v = values[np.isfinite(values) & (values > 0)]
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


def summary_table(table: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """Per method: images, failures, the gap (median and geometric mean over images with an
    informative bound), score over the image's best and over kmeans (geometric means), wins
    (sole best), ties (shared best), median and total time. Indexed by method in ``methods`` order.

    Medians and geometric means, not means: one degenerate image cannot dominate them.
    """
    methods = methods or ordered_methods(table["method"].unique())
    rows = []
    for method in methods:
        mine = table[table["method"] == method]
        ok = mine[mine["status"] == "ok"]
        tight = ok[~ok["bound_loose"].astype(bool)]
        rows.append({
            "method": method, "images": len(mine), "ok": len(ok), "failures": len(mine) - len(ok),
            "gap_median": tight["gap"].median(), "gap_geomean": geomean(tight["gap"] + 1.0) - 1.0,
            "loose_images": len(ok) - len(tight),
            "vs_best_geomean": geomean(ok["vs_best"] + 1.0), "ratio_to_kmeans_geomean": geomean(ok["ratio_to_kmeans"]),
            "wins": int((ok["best"] & ~ok["tie"]).sum()), "ties": int(ok["tie"].sum()),
            "median_time_s": ok["wall_time_s"].median(), "total_time_s": mine["wall_time_s"].sum(),
            "max_peak_memory_mb": mine["peak_memory_mb"].max(),
            "devices": ", ".join(sorted(map(str, ok["device"].dropna().unique()))),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).set_index("method")


def write_csv(frame: pd.DataFrame, path: Path, *, index: bool = False, sep: str = ",") -> None:
    """Write a table atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index, sep=sep, float_format="%.10g")


def training(record: dict) -> dict | None:
    """A cnn record's training: init, best, best epoch and the curve (epoch 0 = init), or None.

    Reads ``extras.init_score``, ``extras.curve`` (entries are numbers or ``{"score": x}``),
    ``extras.best_score`` and ``extras.best_epoch``, falling back on the curve for missing ones.
    """
    extras = as_dict(record.get("extras"))
    raw = extras.get("curve")
    if not isinstance(raw, (list, tuple)):
        return None
    curve = [number(c.get("score") if isinstance(c, dict) else c) for c in raw]
    curve = [v for v in curve if math.isfinite(v)]
    if len(curve) < 2:
        return None
    init, best = number(extras.get("init_score")), number(extras.get("best_score"))
    init = init if math.isfinite(init) else curve[0]
    best_epoch = extras.get("best_epoch")
    if not isinstance(best_epoch, int) or not 0 <= best_epoch < len(curve):
        best_epoch = int(np.argmin(curve))
    best = best if math.isfinite(best) else curve[best_epoch]
    return {"curve": curve, "init": init, "best": best, "best_epoch": best_epoch,
            "gain": (init - best) / init if init > 0 else math.nan}


def record_details(records: list[dict], input_dir: Path | None) -> dict[tuple[str, str], dict]:
    """What the page shows beyond the table, by (image, method): palette and training, and
    what names the thumbnails: the image's content hash and the job that wrote the output."""
    return {(image, method): {"palette": record.get("palette") or [], "training": training(record),
                              "sha256": as_dict(record.get("image")).get("sha256"),
                              "output": f"{record.get('job_fingerprint')} {record.get('created')}"}
            for record, (image, method, _) in zip(records, identify(records, input_dir))}
