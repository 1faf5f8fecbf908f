"""The report: every (image, method) record as a CSV table and as one offline HTML page.

:func:`build_report` is the entry point (the workflow's ``scripts/report.py`` calls it). It is
a function of its arguments alone: the records, the files they name, and the run history,
which the caller reads and passes in (the workflow declares its history file as an input).

- :mod:`cq.report.tables`: the rows, the comparisons (gap, ties, score over the best) and the
  per-method summary; :mod:`cq.report.assets`: thumbnails and palette strips;
  :mod:`cq.report.charts`: SVG charts, ticks and scales; :mod:`cq.report.page`: the page,
  from ``templates/report.html.j2`` (Jinja2, autoescaped) with ``report.css``/``report.js``.
- The page shows, per image, the original (a transparent one on a checkerboard, beside the
  composite that was quantized) and every method's output with its palette, score, the score's parts and gap, the best marked (a tie
  as a tie); a summary per method; charts; a results table that sorts and filters (a small
  inline script, offline); every failure; the finished runs of the history. Every chart dot
  names its image and links to its row. Below 700 px each table row becomes a card of
  labelled cells, so no column is cut on a phone.
- Every text is escaped and every URL quoted: file names are data, never markup.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from cq.fsutil import atomic_path, file_mode
from cq.report.assets import ASSETS_DIR, THUMB_PX, make_assets, prune_assets
from cq.report.bundle import write_best_folder
from cq.report.page import render_page
from cq.report.tables import (CSV_COLUMNS, REFERENCE, SUMMARY_COLUMNS, TIE_RTOL, image_key, ordered_methods,
                              record_details, records_table, summary_table, write_csv)

__all__ = ["ASSETS_DIR", "CSV_COLUMNS", "MAX_CARDS", "REFERENCE", "SUMMARY_COLUMNS", "THUMB_PX", "TIE_RTOL",
           "build_report", "image_key", "ordered_methods", "records_table", "summary_table"]

MAX_CARDS = 500  # images with cards on the page; the CSV and summary cover all


def build_report(records: list[dict], results_dir: Path, input_dir: Path, csv_path: Path,
                 html_path: Path, *, history: list[dict] = (), skipped: list[str] = (),
                 summary_path: Path | None = None, best_dir: Path | None = None,
                 method_order: list[str] | None = None, title: str = "Colour quantization report",
                 max_cards: int = MAX_CARDS, built: datetime | None = None) -> None:
    """Write ``csv_path`` (one row per image x method), ``html_path`` (the page) and, when
    given, ``summary_path`` (the per-method summary as TSV), each atomically.

    Parameters
    ----------
    records : dicts as returned by ``cq.record.read_record``, or error stubs
        ``{"status": "error", "error": ..., "method": ..., "image": {"path": ...}}``.
    results_dir : where the quantized PNGs are (``cq.discover.result_path``).
    input_dir : the folder the image paths are relative to (for display and PNG lookup).
    history : finished runs as ``cq.history.load_history`` gives them (start, end, status,
        counts, time_per_method), oldest first; empty: no history section.
    skipped : what this run's discovery left out (symlink loops, links out of the folder...),
        one line each, listed under the failures.
    method_order : optional column order (e.g. the config's); else kmeans first, then alphabetical.
    max_cards : the page shows cards, rows and chart dots for at most this many images (in
        name order), so that it stays light for huge folders; the CSV, the summary and the
        failures always cover every result.
    built : the time the page says it was built (default: now), so that a test can pin it.

    Thumbnails are written first, then the CSV, then the page, so the page never points at a
    thumbnail that is not there yet, and the previous page stays readable until replaced;
    then the thumbnails no page shows any more are deleted.
    """
    results_dir, input_dir = Path(results_dir), Path(input_dir)
    html_path = Path(html_path)
    file_mode()  # read the umask here, before any thread could race on it
    table = records_table(records, input_dir)
    methods = ordered_methods(table["method"].unique(), method_order)
    details = record_details(records, input_dir)
    shown = table[table["image"].isin(list(dict.fromkeys(table["image"]))[:max_cards])]
    assets = make_assets(shown, details, results_dir, input_dir, html_path.parent)
    summary = summary_table(table, methods)
    write_csv(table, Path(csv_path))
    if summary_path is not None:
        write_csv(summary, Path(summary_path), index=True, sep="\t")
    if best_dir is not None:
        write_best_folder(table, methods, results_dir, Path(best_dir))
    order_note = ("Methods in the configured order." if method_order is not None
                  else f"Methods: {REFERENCE} first as the reference, then alphabetical.")
    page = render_page(table, summary, methods, details, assets, history=list(history), skipped=list(skipped),
                       built=built or datetime.now(timezone.utc), title=title, order_note=order_note,
                       shown=shown)
    with atomic_path(html_path) as tmp:
        Path(tmp).write_bytes(page.encode("utf-8"))
    prune_assets(html_path.parent, assets.values())
