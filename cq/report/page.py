"""The HTML page: the tables and charts turned into a context for ``templates/report.html.j2``.

The template is rendered by Jinja2 with autoescape on, so every name is text; the charts are
:class:`markupsafe.Markup` built with escaping (cq.report.charts). The CSS and the small sort
and filter script are package files inlined into the page, which stays one offline file.
"""

from __future__ import annotations

import functools
import hashlib
import math
from datetime import datetime
from importlib import resources

import jinja2
import pandas as pd
from markupsafe import Markup

from cq.report.assets import THUMB_PX
from cq.report.charts import curve_chart, line_chart, method_colours, parts_bar, strip_chart
from cq.report.fmt import finite, fmt_num, fmt_pct, fmt_ratio, fmt_time
from cq.report.tables import LOOSE_GAP, REFERENCE, SCORE_FLOOR, TIE_RTOL, number

PART_NAMES = (("part_mse", "MSE"), ("part_max_cost", "max cost"), ("part_mean_cost", "mean cost"))


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("cq.report", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _static(name: str) -> Markup:
    """A package file inlined as is (our own CSS or script, never data)."""
    return Markup(resources.files("cq.report").joinpath("templates", name).read_text(encoding="utf-8"))


def anchor(image: str, method: str | None = None) -> str:
    """The id of an image's card (``i-``) or of a result's row (``r-``): a hash, safe for any name."""
    key = image if method is None else f"{image}\0{method}"
    return ("i-" if method is None else "r-") + hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def display_size(width, height, box: int = THUMB_PX) -> dict | None:
    """How large a thumbnail is drawn: fitted into the box; an image under half the box is
    scaled up, pixelated (an 8x8 icon shows its pixels), a larger one kept at its size."""
    if pd.isna(width) or pd.isna(height) or not width or not height:
        return None
    scale = box / max(int(width), int(height))
    scale = 1.0 if 1 < scale < 2 else scale
    return {"w": max(1, round(int(width) * scale)), "h": max(1, round(int(height) * scale)), "pixelated": scale > 1}


def render_page(table: pd.DataFrame, summary: pd.DataFrame, methods: list[str], details: dict,
                assets: dict, *, history: list[dict], skipped: list[str], built: datetime, title: str,
                order_note: str,
                shown: pd.DataFrame) -> str:
    """The whole page as one string. ``shown`` (a part of ``table``) gets cards, rows and chart dots."""
    colours = method_colours(methods)
    images = list(dict.fromkeys(table["image"]))
    ok = table[table["status"] == "ok"]
    weights = _weights(ok)
    rows_by_image: dict[str, list[dict]] = {}
    for row in shown.to_dict("records"):
        rows_by_image.setdefault(row["image"], []).append(row)
    context = {
        "title": title, "built": built.strftime("%Y-%m-%d %H:%M:%S %Z").strip(), "order_note": order_note,
        "n_images": len(images), "n_methods": len(methods), "n_results": len(table),
        "n_failed": int((table["status"] != "ok").sum()), "n_shown": len(rows_by_image),
        "k": int(ok["k"].dropna().iloc[0]) if ok["k"].notna().any() else None,
        "weights": weights, "reference": REFERENCE, "loose_pct": fmt_pct(LOOSE_GAP + 1.0),
        "floor": fmt_num(SCORE_FLOOR), "tie_rtol": f"{TIE_RTOL:g}",
        "colours": colours, "summary": _summary_rows(summary, colours),
        "has_reference": bool(summary["ratio_to_kmeans_geomean"].notna().any()),
        "charts": _charts(shown, summary, methods, colours) if len(ok) else [],
        "results": [_result_row(r) for rows in rows_by_image.values() for r in rows],
        "cards": [_card(image, rows, methods, assets, details) for image, rows in rows_by_image.items()],
        "failures": [{"image": r.image, "method": r.method, "error": r.error}
                     for r in table[table["status"] != "ok"].itertuples()],
        "skipped": skipped,
        "history": _history(history, colours) if history else None,
        "css": _static("report.css"), "script": _static("report.js"),
    }
    return _environment().get_template("report.html.j2").render(context)


def _weights(ok: pd.DataFrame) -> dict:
    """The weights of the parts, as the records give them (implied by part / term)."""
    out = {}
    for key, term in (("part_mse", "mse"), ("part_max_cost", "max_cost"), ("part_mean_cost", "mean_cost")):
        ratio = (ok[key] / ok[term]).replace([math.inf, -math.inf], math.nan).dropna()
        out[term] = f"{ratio.iloc[0]:g}" if len(ratio) else "?"
    return out


def _summary_rows(summary: pd.DataFrame, colours: dict) -> list[dict]:
    """The per-method table's cells, the best value of each comparison column marked."""
    better = {"gap_median": "min", "gap_geomean": "min", "vs_best_geomean": "min",
              "ratio_to_kmeans_geomean": "min", "wins": "max"}
    best = {c: (summary[c].min() if how == "min" else summary[c].max())
            for c, how in better.items() if summary[c].notna().any()}
    fmts = {"gap_median": fmt_pct, "gap_geomean": fmt_pct, "vs_best_geomean": fmt_ratio,
            "ratio_to_kmeans_geomean": fmt_ratio, "median_time_s": fmt_time, "total_time_s": fmt_time,
            "max_peak_memory_mb": lambda v: f"{fmt_num(v, 0)} MB" if finite(v) else "–"}
    rows = []
    for method, row in summary.iterrows():
        cells = {c: fmts.get(c, lambda v: f"{int(v)}")(row[c]) for c in summary.columns if c != "devices"}
        top = {c for c, v in best.items() if row[c] == v and (c != "wins" or v > 0)}
        rows.append({"method": method, "colour": colours[method], "cells": cells, "top": top,
                     "devices": row["devices"]})
    return rows


def _charts(shown: pd.DataFrame, summary: pd.DataFrame, methods: list[str], colours) -> list[dict]:
    ok = shown[shown["status"] == "ok"]
    tight = ok[~ok["bound_loose"].astype(bool)]

    def series(frame, column, marker):
        out = []
        for m in methods:
            mine = frame[frame["method"] == m]
            tips = [(image, f"#{anchor(image, m)}") for image in mine["image"]]
            out.append((m, list(mine[column]), summary.at[m, marker], tips))
        return out

    charts = [{"title": "Gap to the lower bound, per image",
               "svg": strip_chart(series(tight, "gap", "gap_median"), fmt=fmt_pct, colours=colours, clip=True,
                                  label="(score − bound) / bound; dots: images; bar: median")},
              {"title": "Score over the image's best, per image",
               "svg": strip_chart([(m, [1 + v for v in vs], mk, tips)
                                   for m, vs, mk, tips in series(ok, "vs_best", "vs_best_geomean")],
                                  fmt=lambda v: f"{v:.3g}", log=True, reference=1.0, colours=colours,
                                  label="score / best score (log scale; 1 = best); bar: geometric mean")}]
    if summary["ratio_to_kmeans_geomean"].notna().any():
        charts.append({"title": f"Score relative to {REFERENCE}, per image",
                       "svg": strip_chart(series(ok, "ratio_to_kmeans", "ratio_to_kmeans_geomean"),
                                          fmt=lambda v: f"{v:.3g}", log=True, reference=1.0, colours=colours,
                                          label=f"score / {REFERENCE} score (log scale; below 1 is better)")})
    charts.append({"title": "Time per image",
                   "svg": strip_chart(series(ok, "wall_time_s", "median_time_s"), fmt=fmt_time, log=True,
                                      colours=colours, label="wall time per image (log scale; bar: median)")})
    return charts


def _gap_text(row: dict) -> str:
    if row["status"] != "ok" or not finite(row["gap"]):
        return "–"
    return "bound loose" if row["bound_loose"] else fmt_pct(row["gap"])


def _sort_key(value) -> str:
    """A cell's sort value: 8 significant digits (orders the table, keeps the page light)."""
    return f"{value:.8g}" if finite(value) else ""


def _result_row(row: dict) -> dict:
    """One line of the sortable results table: (text, sort value) per cell."""
    ok = row["status"] == "ok"

    def cell(value, fmt):
        return {"text": fmt(value) if ok else "–", "v": _sort_key(value) if ok else ""}

    gap = _sort_key(row["gap"]) if ok and not row["bound_loose"] else ""
    return {"image": row["image"], "method": row["method"], "status": row["status"],
            "id": anchor(row["image"], row["method"]), "card": anchor(row["image"]),
            "standing": "tie" if row["tie"] else "best" if row["best"] else "",
            "score": cell(row["score"], fmt_num),
            "parts": [cell(row[key], fmt_num) for key, _ in PART_NAMES],
            "gap": {"text": _gap_text(row), "v": gap},
            "vs_best": cell(row["vs_best"], fmt_pct), "time": cell(row["wall_time_s"], fmt_time)}


def _card(image: str, rows: list[dict], methods: list[str], assets: dict, details: dict) -> dict:
    """One image: its facts, the original, a tile per method, the cnn trainings."""
    sized = [r for r in rows if not pd.isna(r["width"])]
    lower = [r["lower_bound"] for r in rows if finite(r["lower_bound"])]
    best = [r["method"] for r in rows if r["best"]]
    facts = [f"{sized[0]['width']}×{sized[0]['height']}" if sized else "size unknown",
             f"lower bound {fmt_num(lower[0])}" if lower else None,
             ("tie: " if len(best) > 1 else "best: ") + ", ".join(best) if best else "no method succeeded"]
    if any(r["bound_loose"] for r in rows):
        facts.append(f"bound loose (every result is over {fmt_pct(LOOSE_GAP + 1.0)} of it): no gap shown")
    by_method = {r["method"]: r for r in rows}
    tiles = [_tile(by_method[m], image, assets, details) | {"id": anchor(image, m)} for m in methods if m in by_method]
    trainings = []
    for m in methods:
        t = details.get((image, m), {}).get("training")
        if m in by_method and by_method[m]["status"] == "ok" and t:
            trainings.append({"method": m, "svg": curve_chart(t["curve"], t["best_epoch"], fmt=lambda v: fmt_num(v, 0)),
                              "init": fmt_num(t["init"]), "best": fmt_num(t["best"]), "epoch": t["best_epoch"],
                              "epochs": len(t["curve"]) - 1, "gain": fmt_pct(t["gain"])})
    size = display_size(sized[0]["width"], sized[0]["height"]) if sized else None
    composite = assets.get(("comp", image))
    return {"image": image, "id": anchor(image), "facts": " · ".join(f for f in facts if f), "size": size,
            "original": {"src": assets.get(("orig", image)), "href": assets.get(("href-orig", image)),
                         "alpha": bool(composite)},
            "composite": composite, "tiles": tiles, "trainings": trainings}


def _tile(row: dict, image: str, assets: dict, details: dict) -> dict:
    method = row["method"]
    if row["status"] != "ok":
        return {"method": method, "ok": False, "error": row["error"]}
    parts = [(name, row[key]) for key, name in PART_NAMES]
    ratio = row["ratio_to_kmeans"]
    return {"method": method, "ok": True, "best": bool(row["best"]), "tie": bool(row["tie"]),
            "src": assets.get(("q", image, method)), "href": assets.get(("href-q", image, method)),
            "palette": assets.get(("pal", image, method)), "n_colors": row["n_colors"],
            "score": fmt_num(row["score"]), "gap": _gap_text(row),
            "vs_best": "" if row["best"] else f"+{fmt_pct(row['vs_best'])} vs best",
            "ratio": fmt_ratio(ratio) if finite(ratio) and method != REFERENCE else "",
            "time": fmt_time(row["wall_time_s"]), "notes": row["notes"] if isinstance(row["notes"], str) else None,
            "parts": parts_bar(parts, fmt=fmt_num),
            "parts_text": ", ".join(f"{n} {fmt_num(v)}" for n, v in parts)}


def _duration(start, end) -> float:
    """Seconds between two ISO timestamps, NaN when either is missing or unparsable."""
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return math.nan


def _when(stamp, since=None) -> dict:
    """An ISO timestamp as the history table shows it: date and time to the second, the date
    left out when it is ``since``'s; the full stamp stays in the ``datetime`` attribute."""
    try:
        t = datetime.fromisoformat(str(stamp))
    except (TypeError, ValueError):
        return {"iso": "", "text": str(stamp) if stamp else "–"}
    try:
        same_day = since is not None and datetime.fromisoformat(str(since)).date() == t.date()
    except ValueError:
        same_day = False
    zone = "" if t.utcoffset() is None else " UTC" if not t.utcoffset() else t.strftime(" %z")
    return {"iso": str(stamp), "text": t.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S") + zone}


def _history(history: list[dict], colours: dict) -> dict:
    """Run history: rows (start, end, duration, status, counts, time per method) and a chart."""
    methods = list(dict.fromkeys(m for run in history for m in (run.get("time_per_method") or {})))
    rows = []
    for i, run in enumerate(history):
        counts = run.get("counts")
        counts = ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else counts
        times = run.get("time_per_method") or {}
        rows.append({"n": i + 1, "start": _when(run.get("start")), "end": _when(run.get("end"), run.get("start")),
                     "duration": fmt_time(_duration(run.get("start"), run.get("end"))),
                     "status": run.get("status") or "", "counts": counts,
                     "times": [(m, fmt_time(number(times.get(m)))) for m in methods if m in times]})
    chart = None
    if methods:
        series = {m: [number((run.get("time_per_method") or {}).get(m)) for run in history] for m in methods}
        chart = line_chart(series, [str(i + 1) for i in range(len(history))], fmt=fmt_time, x_name="run",
                           label="time per method per run (x: run)",
                           colours={**method_colours(methods), **colours},
                           links=[f"#run-{i + 1}" for i in range(len(history))])
    return {"methods": methods, "rows": rows, "chart": chart}
