"""The report: every (image, method) record as a CSV table and as one offline HTML page.

``build_report`` is the entry point (the workflow's ``scripts/report.py`` calls it). The page
shows, per image, the original and every method's output with its palette and score, the best
method marked; a summary per method; inline-SVG charts (no JavaScript, works offline); every
failure with its message; and, when given, the run history.

Choices worth knowing:
- Method order is kmeans first (the reference of the ratio columns), then alphabetical,
  unless ``method_order`` gives one (e.g. the config's); unlisted methods follow alphabetically.
- The best method of an image is the lowest score among its ``ok`` records; ties all count as
  wins. ``ratio_to_kmeans`` is ``score / kmeans score`` on the same image.
- Duplicate (image, method) records keep the last one (stubs naming neither are all kept).
- Thumbnails (at most ``THUMB_PX`` a side) live in ``report_files/`` beside the page: originals
  as JPEG and quantized outputs as PNG resized with NEAREST (so their colours stay the
  palette's), named by a hash of the source path and rebuilt only when missing or older than
  the source; palette strips are named by a hash of the palette. Nothing there is ever deleted.
- Every text is escaped and every URL quoted: file names are data, never markup.
"""

from __future__ import annotations

import functools
import hashlib
import html
import logging
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from PIL import Image

from cq.imageio import ImageError, atomic_path, load_image

log = logging.getLogger(__name__)

REFERENCE = "kmeans"
THUMB_PX = 160
ASSETS_DIR = "report_files"
MAX_CARDS = 500  # images with cards on the page; the CSV and summary cover all
SCORE_PARTS = ("score", "mse", "mean_cost", "max_cost", "palette_score", "palette_mean_cost",
               "lower_bound", "gap")
CSV_COLUMNS = ("image", "method", "base_method", "method_version", "status", "error",
               *SCORE_PARTS, "ratio_to_kmeans", "best", "n_colors", "k", "width", "height",
               "wall_time_s", "peak_memory_mb", "device", "notes", "image_path", "created")
# Tableau 10: distinct, colour-blind-friendlier hues for the methods, in method order.
METHOD_COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1",
                  "#ff9da7", "#9c755f", "#bab0ac")


# --------------------------------------------------------------------------- entry point


def build_report(records: list[dict], results_dir: Path, input_dir: Path, csv_path: Path,
                 html_path: Path, *, history: list[dict] | None = None,
                 method_order: list[str] | None = None, title: str = "Colour quantization report",
                 max_cards: int = MAX_CARDS) -> None:
    """Write ``csv_path`` (one row per image x method) and ``html_path`` (the page), atomically.

    Parameters
    ----------
    records : dicts as returned by ``cq.record.read_record``, or error stubs
        ``{"status": "error", "error": ..., "method": ..., "image": {"path": ...}}``.
    results_dir : where the quantized PNGs are, ``{results_dir}/{method}/{relpath}.png``.
    input_dir : the folder the image paths are relative to (for display and PNG lookup).
    history : runs, ``{"start", "end", "counts", "time_per_method"}`` each; None: the runs of
        ``{results_dir}/history.jsonl`` plus the run in progress (see cq.history), if any.
    method_order : optional column order (e.g. the config's); see the module docstring.
    max_cards : the page shows cards, thumbnails and chart dots for at most this many images
        (in name order), so that it stays light for huge folders; the CSV, the summary and
        the failures always cover every result.

    Thumbnails are written first, then the CSV, then the page, so the page never points at
    a thumbnail that is not there yet.
    """
    results_dir, input_dir = Path(results_dir), Path(input_dir)
    csv_path, html_path = Path(csv_path), Path(html_path)
    file_mode()  # read the umask here, before any thread could race on it
    if history is None:
        history = run_history(records, results_dir)
    table = records_table(records, input_dir)
    methods = ordered_methods(table["method"].unique(), method_order)
    details = record_details(records, input_dir)
    shown = table[table["image"].isin(list(dict.fromkeys(table["image"]))[:max_cards])]
    assets = make_assets(shown, details, results_dir, input_dir, html_path.parent)
    write_csv(table, csv_path)
    order_note = ("Methods in the configured order." if method_order is not None
                  else f"Methods: {REFERENCE} first as the reference, then alphabetical.")
    page = render_html(table, summary_table(table, methods), methods, details, assets,
                       title=title, history=history, order_note=order_note, shown=shown)
    with published(html_path) as tmp:
        Path(tmp).write_bytes(page.encode("utf-8"))


def run_history(records: list[dict], results_dir: Path) -> list[dict]:
    """The recorded runs and, while a run is in progress, its line so far (from ``records``)."""
    from cq.history import live_run, load_history

    runs = load_history(results_dir)
    live = live_run(results_dir, records)
    return runs + [live] if live else runs


# --------------------------------------------------------------------------- files

@functools.cache
def file_mode() -> int:
    """The mode a plain new file gets here (0o666 less the umask); read once, in the main thread."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def published(path: Path):
    """``cq.imageio.atomic_path`` with the usual file mode (its temporary files are 0600),
    so that the page can be served by a web server."""
    with atomic_path(path) as tmp:
        yield tmp
        os.chmod(tmp, file_mode())


@contextmanager
def published_quick(path: Path):
    """Like :func:`published` but without fsync: for thumbnails, which are cheap to remake.

    The fsync of ``atomic_path`` costs ~7 ms a file here, half the time of 3,500 thumbnails.
    Never half-written to a reader (rename); a crash may leave an empty file, which
    :func:`_fresh` treats as missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- tables

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
        image = _dict(record.get("image"))
        path = str(image["path"]) if image.get("path") else None
        if path not in keys:
            keys[path] = image_key(path, input_dir)
        out.append((keys[path], str(record.get("method") or "(unknown method)"), path))
    return out


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _row(record: dict, identity: tuple[str, str, str | None]) -> dict:
    """One table row from a record, tolerating the missing keys of error stubs."""
    image, scores = _dict(record.get("image")), _dict(record.get("scores"))
    key, method, path = identity
    notes = list(image.get("notes") or []) + list(record.get("notes") or [])
    row = {
        "image": key,
        "method": method,
        "base_method": record.get("base_method"),
        "method_version": record.get("method_version"),
        "status": "ok" if record.get("status") == "ok" else "error",
        "error": record.get("error"),
        **{part: _number(scores.get(part)) for part in SCORE_PARTS},
        "n_colors": record.get("n_colors"), "k": record.get("k"),
        "width": image.get("width"), "height": image.get("height"),
        "wall_time_s": _number(record.get("wall_time_s")),
        "peak_memory_mb": _number(record.get("peak_memory_mb")),
        "device": record.get("device"), "notes": "; ".join(map(str, notes)) or None,
        "image_path": path, "created": record.get("created"),
    }
    if row["status"] == "error" and not row["error"]:
        row["error"] = "error (no message)"
    return row


def _number(value) -> float:
    """A float, or NaN for None and anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def records_table(records: list[dict], input_dir: Path | None = None) -> pd.DataFrame:
    """One row per image x method with every score part, time, memory, device, status, error.

    Adds ``ratio_to_kmeans`` (score over the kmeans score of the same image, NaN without one)
    and ``best`` (lowest ok score of its image; ties all True). Rows are sorted by image, then
    method; a duplicate (image, method) keeps the last record, except that stubs naming no
    image or no method are all kept (each is a different failure).
    """
    rows = [_row(r, identity) for r, identity in zip(records, identify(records, input_dir))]
    table = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    unknown = table["image"].str.startswith("(unknown") | table["method"].str.startswith("(unknown")
    table = table[unknown | ~table.duplicated(["image", "method"], keep="last")]
    ok_score = table["score"].where(table["status"] == "ok")
    reference = ok_score.where(table["method"] == REFERENCE).groupby(table["image"]).transform("max")
    table["ratio_to_kmeans"] = ok_score / reference.where(reference > 0)
    best = ok_score.groupby(table["image"]).transform("min")
    table["best"] = ok_score.notna() & (ok_score == best)
    for column in ("n_colors", "k", "width", "height"):
        table[column] = table[column].astype("Int64")
    return table.sort_values(["image", "method"], kind="stable").reset_index(drop=True)


def ordered_methods(names, preferred: list[str] | None = None) -> list[str]:
    """Stable method order: ``preferred`` first (those present), else kmeans; then alphabetical."""
    names = set(names)
    head = [m for m in (preferred if preferred is not None else [REFERENCE]) if m in names]
    return head + sorted(names - set(head))


def _geomean(values: pd.Series) -> float:
    """Geometric mean of the positive finite values (NaN when none)."""
    v = values[np.isfinite(values) & (values > 0)]
    return float(np.exp(np.log(v).mean())) if len(v) else math.nan


SUMMARY_COLUMNS = ("method", "images", "ok", "failures", "mean_score", "gap_geomean", "gap_mean",
                   "ratio_to_kmeans_geomean", "wins", "mean_time_s", "total_time_s", "max_peak_memory_mb",
                   "devices")


def summary_table(table: pd.DataFrame, methods: list[str] | None = None) -> pd.DataFrame:
    """Per method: images, failures, mean score, gap (geo-mean and mean), ratio to kmeans, wins, time.

    The gap's geometric mean is that of ``score / lower_bound`` minus 1 (the mean of a ratio
    that does not let one bad image dominate); the ratio to kmeans is a geometric mean over the
    images where both ran. Indexed by method in ``methods`` order.
    """
    methods = methods or ordered_methods(table["method"].unique())
    rows = []
    for method in methods:
        mine = table[table["method"] == method]
        ok = mine[mine["status"] == "ok"]
        rows.append({
            "method": method, "images": len(mine), "ok": len(ok), "failures": len(mine) - len(ok),
            "mean_score": ok["score"].mean(),
            "gap_geomean": _geomean(ok["gap"] + 1.0) - 1.0, "gap_mean": ok["gap"].mean(),
            "ratio_to_kmeans_geomean": _geomean(ok["ratio_to_kmeans"]),
            "wins": int(ok["best"].sum()), "mean_time_s": ok["wall_time_s"].mean(),
            "total_time_s": mine["wall_time_s"].sum(), "max_peak_memory_mb": mine["peak_memory_mb"].max(),
            "devices": ", ".join(sorted(map(str, ok["device"].dropna().unique()))),
        })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).set_index("method")


def write_csv(table: pd.DataFrame, csv_path: Path) -> None:
    """Write the table as CSV atomically (a reader never sees half a file)."""
    with published(csv_path) as tmp:
        table.to_csv(tmp, index=False, columns=list(CSV_COLUMNS), float_format="%.10g")


def record_details(records: list[dict], input_dir: Path | None) -> dict[tuple[str, str], dict]:
    """What the page shows beyond the table, by (image, method): palette and training curve."""
    details = {}
    for record, (image, method, _) in zip(records, identify(records, input_dir)):
        curve = _dict(record.get("extras")).get("curve")
        details[image, method] = {"palette": record.get("palette") or [], "curve": _curve(curve)}
    return details


def _curve(curve) -> list[float]:
    """The finite scores of a training curve; entries may be numbers or ``{"score": x}`` dicts."""
    if not isinstance(curve, (list, tuple)):
        return []
    values = [_number(c.get("score") if isinstance(c, dict) else c) for c in curve]
    return [v for v in values if math.isfinite(v)]


# --------------------------------------------------------------------------- thumbnails

def _asset_name(kind: str, source: str, suffix: str) -> str:
    """A stable file name under report_files/ for a source path (hash: safe for any name)."""
    digest = hashlib.sha1(source.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"{kind}/{digest}{suffix}"


def _fresh(target: Path, source: Path) -> bool:
    """True when ``target`` exists, is not empty and is not older than ``source``."""
    try:
        made = target.stat()
        return made.st_size > 0 and made.st_mtime >= source.stat().st_mtime
    except OSError:
        return False


def _thumb_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, THUMB_PX / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail_original(source: Path, target: Path) -> bool:
    """Write a JPEG thumbnail of an original (read with cq's rules); False when unreadable."""
    if _fresh(target, source):
        return True
    try:
        pixels = load_image(source).pixels  # the bomb guard stays: a refused image gets no thumbnail
    except ImageError:
        return False
    im = Image.fromarray(pixels, "RGB")
    im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with published_quick(target) as tmp:
        im.save(tmp, format="JPEG", quality=82, optimize=True)
    return True


def thumbnail_quantized(source: Path, target: Path) -> bool:
    """Write a NEAREST-resized PNG thumbnail of a quantized output (its palette stays exact)."""
    if _fresh(target, source):
        return True
    try:
        with Image.open(source) as im:
            im.load()
            small = im.resize(_thumb_size(*im.size), Image.Resampling.NEAREST)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    with published_quick(target) as tmp:
        small.save(tmp, format="PNG")  # optimize=True: twice the time for 0.2% smaller
    return True


PALETTE_COLUMNS = 13


def sorted_palette(palette) -> np.ndarray:
    """The palette as (n, 3) uint8 sorted by luma, so strips read dark to light."""
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    luma = colours @ np.array([0.299, 0.587, 0.114])
    return colours[np.argsort(luma, kind="stable")]


def palette_strip(palette, target: Path) -> None:
    """Write the palette as a tiny RGBA PNG, one pixel per colour in rows of PALETTE_COLUMNS.

    The page shows it scaled up with ``image-rendering: pixelated``: one square per colour.
    Named by the palette's hash, so it never goes stale and is written once.
    """
    if target.exists() and target.stat().st_size > 0:
        return
    colours = sorted_palette(palette)
    rows = max(1, -(-len(colours) // PALETTE_COLUMNS))
    grid = np.zeros((rows * PALETTE_COLUMNS, 4), dtype=np.uint8)
    grid[:len(colours), :3], grid[:len(colours), 3] = colours, 255
    with published_quick(target) as tmp:
        Image.fromarray(grid.reshape(rows, PALETTE_COLUMNS, 4), "RGBA").save(tmp, format="PNG")


def palette_name(palette) -> str:
    return "pal/" + hashlib.sha1(sorted_palette(palette).tobytes()).hexdigest()[:20] + ".png"


def quantized_png(results_dir: Path, method: str, image: str) -> Path | None:
    """Where the pipeline wrote an image's output for a method, or None for an outside path."""
    if Path(image).is_absolute() or image.startswith("("):
        return None
    return results_dir / method / f"{image}.png"


def make_assets(table: pd.DataFrame, details: dict, results_dir: Path, input_dir: Path,
                page_dir: Path, workers: int | None = None) -> dict:
    """Write the thumbnails and palette strips; return URLs (relative to the page) by key.

    Keys: ``("orig", image)`` and ``("q", image, method)``, ``("pal", image, method)``,
    plus ``("href-orig", image)`` / ``("href-q", image, method)`` linking the full files
    (only where a thumbnail could be made, so that no link points at a missing file).
    Work runs on a thread pool (Pillow releases the GIL while decoding and resizing).
    """
    results_dir, page_dir = Path(results_dir).resolve(), Path(page_dir).resolve()
    root = page_dir / ASSETS_DIR
    tasks, urls = [], {}  # task: (kind, key, writer, source, asset name)
    for image, path in table.groupby("image", sort=False)["image_path"].first().items():
        if not isinstance(path, str) or not path:
            continue
        source = Path(path) if Path(path).is_absolute() or Path(path).exists() else input_dir / image
        source = source.resolve()
        tasks.append(("orig", (image,), thumbnail_original, source, _asset_name("orig", str(source), ".jpg")))
    for row in table[table["status"] == "ok"].itertuples():
        png = quantized_png(results_dir, row.method, row.image)
        if png is not None:  # results_dir is resolved: png is absolute
            tasks.append(("q", (row.image, row.method), thumbnail_quantized, png, _asset_name("q", str(png), ".png")))
        palette = details.get((row.image, row.method), {}).get("palette")
        if palette:
            urls["pal", row.image, row.method] = _palette_asset(palette, root)
    with ThreadPoolExecutor(workers or min(8, _usable_cpus())) as pool:
        done = pool.map(lambda t: _safely(t[2], t[3], root / t[4]), tasks)
        for (kind, key, _, source, name), ok in zip(tasks, done):
            if ok:
                urls[(kind, *key)] = f"{ASSETS_DIR}/{name}"
                urls[(f"href-{kind}", *key)] = _relative_url(source, page_dir)
    return {k: v for k, v in urls.items() if v}


def _safely(writer, source: Path, target: Path) -> bool:
    """Run a thumbnail writer; any failure means no thumbnail, never a failed report."""
    try:
        return writer(source, target)
    except Exception as e:  # noqa: BLE001 (a thumbnail is decoration)
        log.warning("no thumbnail of %s: %s: %s", source, type(e).__name__, e)
        return False


def _palette_asset(palette, root: Path) -> str | None:
    """The URL of a palette's strip, written if missing; None for a malformed palette."""
    try:
        name = palette_name(palette)
        palette_strip(palette, root / name)
    except (ValueError, TypeError, OverflowError, OSError) as e:
        log.warning("no palette strip: %s", e)
        return None
    return f"{ASSETS_DIR}/{name}"


def _usable_cpus() -> int:
    """CPUs this process may run on (a cluster job's allocation, not the whole node)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _relative_url(target: Path, page_dir: Path) -> str:
    """A relative, percent-quoted URL from the page's folder to ``target`` (both absolute)."""
    try:
        rel = os.path.relpath(target, page_dir)
    except ValueError:  # another drive on Windows
        return Path(target).as_uri()
    return quote(rel.replace(os.sep, "/"))


# --------------------------------------------------------------------------- formatting

def esc(value) -> str:
    """Escape any value for HTML text and attributes (quotes included)."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(value, digits: int = 1) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:,.{digits}f}"


def fmt_pct(value) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def fmt_time(seconds) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds == 0:
        return "0 s"
    if seconds < 1:
        return f"{1000 * seconds:.0f} ms"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# --------------------------------------------------------------------------- charts (SVG)

def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^n)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis: 1-2-5 per decade over wide ranges, round linear steps otherwise."""
    if hi / lo < 20:
        return [t for t in nice_ticks(lo, hi) if t > 0]
    out = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10.0 ** e for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    return out


class Axis:
    """Maps values to x pixels on a linear or log scale over the data's range."""

    def __init__(self, values, x0: float, x1: float, log: bool = False, include=()):
        v = np.asarray([*values, *include], dtype=float)
        v = v[np.isfinite(v) & ((v > 0) if log else True)]
        lo, hi = (float(v.min()), float(v.max())) if len(v) else (1.0, 2.0)
        if hi <= lo:
            lo, hi = (lo / 1.1, hi * 1.1) if log and lo > 0 else (lo - 1.0, hi + 1.0)
        if log:
            pad = (math.log(hi) - math.log(lo)) * 0.04
            lo, hi = math.exp(math.log(lo) - pad), math.exp(math.log(hi) + pad)
        else:
            pad = (hi - lo) * 0.04
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.x0, self.x1, self.log = lo, hi, x0, x1, log

    def __call__(self, value: float) -> float:
        f = math.log if self.log else float
        return self.x0 + (f(value) - f(self.lo)) / (f(self.hi) - f(self.lo)) * (self.x1 - self.x0)

    def ticks(self) -> list[float]:
        return log_ticks(self.lo, self.hi) if self.log else nice_ticks(self.lo, self.hi)


def strip_chart(series: list[tuple[str, list[float], float]], *, label: str, fmt, log: bool = False,
                reference: float | None = None, colours: dict[str, str] | None = None) -> str:
    """One row per method: a dot per image (jittered) and a bar at the summary value.

    ``series`` holds (method, values, marker); ``reference`` draws a dashed line (e.g. 1.0
    for a ratio to kmeans). Returns an inline ``<svg>``.
    """
    width, left, right, row_h, top = 760, 140, 80, 30, 10
    height = top + row_h * len(series) + 34
    values = [v for _, vs, _ in series for v in vs]
    axis = Axis(values, left, width - right, log, include=[reference] if reference else [])
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{esc(label)}">']
    bottom = top + row_h * len(series)
    for tick in axis.ticks():
        x = axis(tick)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="grid"/>'
                     f'<text x="{x:.1f}" y="{bottom + 14}" class="tick">{esc(fmt(tick))}</text>')
    if reference:
        x = axis(reference)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{bottom}" class="ref"/>')
    for i, (method, vals, marker) in enumerate(series):
        y = top + row_h * i + row_h / 2
        colour = (colours or {}).get(method, METHOD_COLOURS[0])
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" class="name">{esc(method)}</text>')
        finite = [v for v in vals if math.isfinite(v) and (v > 0 or not log)]
        opacity = min(0.75, max(0.2, 6 / math.sqrt(max(1, len(finite)))))  # many dots: lighter
        parts.append(f'<g fill="{colour}" fill-opacity="{opacity:.2f}">')
        parts.extend(f'<circle cx="{axis(v):.1f}" cy="{y + ((j * 0.618034) % 1 - 0.5) * 16:.1f}" r="3"/>'
                     for j, v in enumerate(finite))
        parts.append("</g>")
        if math.isfinite(marker) and (marker > 0 or not log):
            x = axis(marker)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 11:.1f}" y2="{y + 11:.1f}" class="marker">'
                         f'<title>{esc(method)}: {esc(fmt(marker))}</title></line>'
                         f'<text x="{width - right + 8}" y="{y + 4:.1f}" class="value">{esc(fmt(marker))}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" class="axis-label">'
                 f'{esc(label)}</text></svg>')
    return "".join(parts)


def sparkline(curve: list[float], width: int = 150, height: int = 34) -> str:
    """A small SVG line of a training curve (score per epoch), its best epoch dotted."""
    if len(curve) < 2:
        return ""
    step = max(1, len(curve) // 120)  # at most ~120 points: light even for long trainings
    points = list(enumerate(curve))[::step]
    lo, hi = min(curve), max(curve)
    span = (hi - lo) or 1.0
    sx = (width - 6) / (len(curve) - 1)

    def xy(i, v):
        return 3 + i * sx, 3 + (hi - v) / span * (height - 6)

    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in points))
    best = int(np.argmin(curve))
    bx, by = xy(best, curve[best])
    tip = f"training curve: {len(curve)} epochs, best {curve[best]:,.1f} at epoch {best + 1}"
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label="{esc(tip)}"><title>{esc(tip)}</title>'
            f'<polyline points="{line}"/><circle cx="{bx:.1f}" cy="{by:.1f}" r="2.5"/></svg>')


def line_chart(series: dict[str, list[float]], x_labels: list[str], *, label: str, fmt,
               colours: dict[str, str] | None = None) -> str:
    """One polyline per series over shared x positions (the history chart), with a legend."""
    width, left, right, top, bottom = 760, 60, 150, 10, 40
    height = 220
    n = max(1, len(x_labels))
    values = [v for vs in series.values() for v in vs if v is not None and math.isfinite(v)]
    y_max = max(values, default=1.0) or 1.0
    ticks = nice_ticks(0.0, y_max, 4)
    if len(ticks) > 1 and ticks[-1] < y_max:  # end the axis on a tick above the highest point
        ticks.append(ticks[-1] + ticks[1] - ticks[0])
    y_top = max(ticks[-1] if ticks else y_max, y_max)

    def x(i):
        return left + (i + 0.5) * (width - left - right) / n

    def y(v):
        return height - bottom - v / y_top * (height - top - bottom)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{esc(label)}">']
    for t in ticks:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(t) + 4:.1f}" class="name">{esc(fmt(t))}</text>')
    for i, text in enumerate(x_labels):
        if n <= 12 or i % math.ceil(n / 12) == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{height - bottom + 14}" class="tick">{esc(text)}</text>')
    for j, (name, vals) in enumerate(series.items()):
        colour = (colours or {}).get(name, METHOD_COLOURS[j % len(METHOD_COLOURS)])
        pts = [(x(i), y(v)) for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
        if pts:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>'
                         + "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in pts))
        parts.append(f'<rect x="{width - right + 12}" y="{top + 16 * j}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{width - right + 28}" y="{top + 16 * j + 9}" class="legend">{esc(name)}</text>')
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 4}" class="axis-label">'
                 f'{esc(label)}</text></svg>')
    return "".join(parts)


# --------------------------------------------------------------------------- page sections

CSS = """
:root{--bg:#f5f6f8;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e3e6eb;--best:#1a7f37;--bad:#c2410c}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1440px;margin:0 auto;padding:20px 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 10px}
.sub{color:var(--muted);margin:0 0 8px}
nav a{margin-right:14px;color:#2563eb;text-decoration:none}
table{border-collapse:collapse;background:var(--card);border-radius:8px;overflow:hidden;
 box-shadow:0 1px 2px rgba(0,0,0,.06)}
th,td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{background:#eef1f5;font-weight:600;font-size:12.5px;white-space:normal;vertical-align:bottom}
.scroll{overflow-x:auto}
td.l,th.l{text-align:left}td.err{white-space:normal;text-align:left;color:var(--bad);max-width:680px}
tr.top td{font-weight:600}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
.chart{display:block;max-width:100%;height:auto;background:var(--card);border-radius:8px;
 box-shadow:0 1px 2px rgba(0,0,0,.06);margin:8px 0 18px}
.chart text{font-size:11.5px;fill:var(--ink)}.chart .tick{text-anchor:middle;fill:var(--muted)}
.chart .name{text-anchor:end}.chart .axis-label{text-anchor:middle;fill:var(--muted)}
.chart .grid{stroke:var(--line)}.chart .ref{stroke:#888;stroke-dasharray:4 3}
.chart .marker{stroke:var(--ink);stroke-width:2.5}
.cards{display:grid;gap:16px}
.card{background:var(--card);border-radius:10px;padding:10px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.card h3{font-size:15px;margin:0 0 2px;overflow-wrap:anywhere}
.card .sub{font-size:12.5px}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(168px,1fr));gap:8px}
.tile{border:1px solid var(--line);border-radius:8px;padding:3px;font-size:12px;position:relative}
.tile.best{border:2px solid var(--best);background:#f0fbf3}
.tile.fail{border-color:#f3c4ae;background:#fff7f3}
.tile .frame{height:160px;display:flex;align-items:center;justify-content:center;background:#fafafa;
 border-radius:4px}
.tile .frame img{max-width:160px;max-height:160px;display:block}
.tile .none{color:var(--muted);font-size:12px}
.tile b{font-size:13px}.tile .m{display:flex;justify-content:space-between;gap:6px;margin-top:4px}
.tile .meta{color:var(--muted);font-size:11px;white-space:nowrap}
.badge{position:absolute;top:10px;right:10px;background:var(--best);color:#fff;font-weight:600;
 font-size:11px;padding:1px 7px;border-radius:10px}
img.pal{width:156px;height:36px;image-rendering:pixelated;image-rendering:crisp-edges;display:block;
 margin-top:5px;border-radius:2px}
.spark{display:block;margin-top:4px}.spark polyline{fill:none;stroke:#7c3aed;stroke-width:1.5}
.spark circle{fill:var(--best)}
.tile .errmsg{color:var(--bad);overflow-wrap:anywhere;max-height:7.5em;overflow:auto}
footer{color:var(--muted);margin:32px 0 8px;font-size:12px}
"""


def method_colours(methods: list[str]) -> dict[str, str]:
    return {m: METHOD_COLOURS[i % len(METHOD_COLOURS)] for i, m in enumerate(methods)}


def summary_html(summary: pd.DataFrame, colours: dict[str, str], has_reference: bool) -> str:
    """The per-method table; the best value of each comparison column in bold."""
    columns = [("ok", "Images", lambda v: f"{int(v)}", None),
               ("mean_score", "Mean score", fmt_num, "min"),
               ("gap_geomean", "Gap (geo-mean)", fmt_pct, "min"),
               ("gap_mean", "Gap (mean)", fmt_pct, "min")]
    if has_reference:
        columns.append(("ratio_to_kmeans_geomean", f"Ratio to {REFERENCE} (geo-mean)",
                        lambda v: fmt_num(v, 4), "min"))
    columns += [("wins", "Wins", lambda v: f"{int(v)}", "max"),
                ("mean_time_s", "Mean time", fmt_time, None),
                ("max_peak_memory_mb", "Peak memory", lambda v: f"{fmt_num(v, 0)} MB", None),
                ("failures", "Failures", lambda v: f"{int(v)}", None)]
    head = "".join(f"<th>{esc(title)}</th>" for _, title, _, _ in columns)
    out = [f'<div class="scroll"><table class="summary"><thead><tr><th class="l">Method</th>{head}'
           f'<th class="l">Device</th></tr></thead><tbody>']
    best = {c: (summary[c].min() if how == "min" else summary[c].max())
            for c, _, _, how in columns if how and summary[c].notna().any()}
    for method, row in summary.iterrows():
        cells = []
        for column, _, fmt, _ in columns:
            text = esc(fmt(row[column]))
            bold = column in best and row[column] == best[column] and (column != "wins" or row[column] > 0)
            cells.append(f"<td>{'<b>' + text + '</b>' if bold else text}</td>")
        out.append(f'<tr><td class="l"><span class="swatch" style="background:{colours[method]}"></span>'
                   f'{esc(method)}</td>{"".join(cells)}<td class="l">{esc(row["devices"])}</td></tr>')
    out.append("</tbody></table></div>")
    return "".join(out)


def charts_html(table: pd.DataFrame, summary: pd.DataFrame, methods: list[str], colours) -> str:
    """Gap to the bound per image, ratio to kmeans per image (when kmeans ran), time per image."""
    ok = table[table["status"] == "ok"]
    by_method = {m: ok[ok["method"] == m] for m in methods}
    out = ["<h3>Gap to the lower bound, per image</h3>",
           strip_chart([(m, list(by_method[m]["gap"]), summary.at[m, "gap_geomean"]) for m in methods],
                       label="score / lower bound − 1 (dots: images; bar: geometric mean)", fmt=fmt_pct,
                       reference=None, colours=colours)]
    if summary["ratio_to_kmeans_geomean"].notna().any():
        out += [f"<h3>Score relative to {REFERENCE}, per image</h3>",
                strip_chart([(m, list(by_method[m]["ratio_to_kmeans"]), summary.at[m, "ratio_to_kmeans_geomean"])
                             for m in methods], label=f"score / {REFERENCE} score (log scale; below 1 is better)",
                            fmt=lambda v: f"{v:.3g}", log=True, reference=1.0, colours=colours)]
    out += ["<h3>Time per image</h3>",
            strip_chart([(m, list(by_method[m]["wall_time_s"]), summary.at[m, "mean_time_s"]) for m in methods],
                        label="wall time per image (log scale; bar: mean)", fmt=fmt_time, log=True,
                        colours=colours)]
    return "".join(out)


def _img(src: str | None, alt: str, href: str | None) -> str:
    """A lazy thumbnail linking to the full file, or a placeholder when there is none."""
    if not src:
        return '<span class="none">no preview</span>'
    tag = f'<img src="{esc(quote(src, safe="/"))}" alt="{esc(alt)}" loading="lazy" decoding="async">'
    return f'<a href="{esc(href)}">{tag}</a>' if href else tag


def tile_html(row: dict, image: str, assets: dict, details: dict) -> str:
    """One method's output for one image: thumbnail, score, gap, ratio, time, palette, curve."""
    method = row["method"]
    if row["status"] != "ok":
        return (f'<div class="tile fail"><div class="frame"><span class="none">failed</span></div>'
                f'<div class="m"><b>{esc(method)}</b></div>'
                f'<div class="errmsg">{esc(row["error"])}</div></div>')
    thumb = _img(assets.get(("q", image, method)), f"{method} output", assets.get(("href-q", image, method)))
    pal_src = assets.get(("pal", image, method))
    palette = (f'<img class="pal" src="{esc(quote(pal_src, safe="/"))}" alt="palette of {esc(method)}" '
               f'loading="lazy" title="{esc(row["n_colors"])} colours">' if pal_src else "")
    ratio = "" if not math.isfinite(row["ratio_to_kmeans"]) or method == REFERENCE else \
        f" · ×{row['ratio_to_kmeans']:.3f}"
    notes = f' title="{esc(row["notes"])}"' if isinstance(row["notes"], str) else ""
    curve = sparkline(details.get((image, method), {}).get("curve", []))
    best = row["best"]
    return (f'<div class="tile{" best" if best else ""}"{notes}>'
            f'{"<span class=badge>best</span>" if best else ""}<div class="frame">{thumb}</div>'
            f'<div class="m"><b>{esc(method)}</b><span>{esc(fmt_num(row["score"]))}</span></div>'
            f'<div class="m meta"><span>gap {esc(fmt_pct(row["gap"]))}{esc(ratio)}</span>'
            f'<span>{esc(fmt_time(row["wall_time_s"]))}</span></div>{palette}{curve}</div>')


def image_card(image: str, rows: list[dict], methods: list[str], assets: dict, details: dict) -> str:
    """The card of one image: its name and facts, then the original and one tile per method.

    ``rows`` are the image's table rows as dicts (far faster than pandas per image).
    """
    sized = [r for r in rows if not pd.isna(r["width"])]
    size = f"{sized[0]['width']}×{sized[0]['height']}" if sized else "size unknown"
    lower = [r["lower_bound"] for r in rows if math.isfinite(r["lower_bound"])]
    best = [r["method"] for r in rows if r["best"]]
    facts = [size, f"lower bound {fmt_num(lower[0])}" if lower else None,
             f"best: {', '.join(best)}" if best else "no method succeeded"]
    original = (f'<div class="tile"><div class="frame">'
                f'{_img(assets.get(("orig", image)), "original", assets.get(("href-orig", image)))}</div>'
                f'<div class="m"><b>original</b></div></div>')
    by_method = {r["method"]: r for r in rows}
    tiles = "".join(tile_html(by_method[m], image, assets, details) for m in methods if m in by_method)
    return (f'<section class="card"><h3>{esc(image)}</h3>'
            f'<p class="sub">{esc(" · ".join(f for f in facts if f))}</p>'
            f'<div class="tiles">{original}{tiles}</div></section>')


def failures_html(table: pd.DataFrame) -> str:
    failed = table[table["status"] != "ok"]
    if failed.empty:
        return "<p>None: every image went through every method.</p>"
    rows = "".join(f'<tr><td class="l">{esc(r.image)}</td><td class="l">{esc(r.method)}</td>'
                   f'<td class="err">{esc(r.error)}</td></tr>' for r in failed.itertuples())
    return (f'<table><thead><tr><th class="l">Image</th><th class="l">Method</th><th class="l">Error</th>'
            f'</tr></thead><tbody>{rows}</tbody></table>')


def skipped_html(history: list[dict] | None) -> str:
    """What the latest run's discovery left out (symlink loops, links out of the folder...)."""
    skipped = (history or [{}])[-1].get("skipped") or []
    if not skipped:
        return ""
    items = "".join(f'<li>{esc(line)}</li>' for line in skipped)
    return f'<h3>Not read: skipped when the folder was walked ({len(skipped)})</h3><ul>{items}</ul>'


def _duration(start, end) -> float:
    """Seconds between two ISO timestamps, NaN when either is missing or unparsable."""
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return math.nan


def history_html(history: list[dict], colours: dict[str, str]) -> str:
    """Run history: a table (start, end, duration, counts) and time per method across runs.

    Each run is a dict with optional ``start``/``end`` (ISO), ``counts`` (a dict such as
    ``{"ok": 10, "error": 1}`` or a number), ``time_per_method`` ({method: seconds}) and
    ``status`` (shown in a column when any run has one).
    """
    rows, methods = [], []
    with_status = any(run.get("status") for run in history)
    for run in history:
        for m in (run.get("time_per_method") or {}):
            if m not in methods:
                methods.append(m)
    for i, run in enumerate(history):
        counts = run.get("counts")
        counts = ", ".join(f"{k} {v}" for k, v in counts.items()) if isinstance(counts, dict) else counts
        times = run.get("time_per_method") or {}
        cells = "".join(f"<td>{esc(fmt_time(_number(times.get(m))))}</td>" for m in methods)
        rows.append(f'<tr><td>{i + 1}</td><td class="l">{esc(run.get("start"))}</td>'
                    f'<td class="l">{esc(run.get("end"))}</td>'
                    f'<td>{esc(fmt_time(_duration(run.get("start"), run.get("end"))))}</td>'
                    f'<td class="l">{esc(counts)}</td>{cells}'
                    + (f'<td class="l">{esc(run.get("status") or "")}</td>' if with_status else "") + '</tr>')
    head = "".join(f"<th>{esc(m)}</th>" for m in methods) + ('<th class="l">Status</th>' if with_status else "")
    table = (f'<table><thead><tr><th>Run</th><th class="l">Start</th><th class="l">End</th><th>Duration</th>'
             f'<th class="l">Counts</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    if not methods:
        return table
    series = {m: [_number((run.get("time_per_method") or {}).get(m)) for run in history] for m in methods}
    chart = line_chart(series, [str(i + 1) for i in range(len(history))],
                       label="time per method per run (x: run)", fmt=fmt_time,
                       colours={**method_colours(methods), **colours})
    return chart + table


def render_html(table: pd.DataFrame, summary: pd.DataFrame, methods: list[str], details: dict,
                assets: dict, *, title: str = "Colour quantization report",
                history: list[dict] | None = None, order_note: str = "",
                shown: pd.DataFrame | None = None) -> str:
    """The whole page as one string: header, summary, charts, image cards, failures, history.

    ``shown`` (default: all of ``table``) is the part that gets cards and chart dots.
    """
    colours = method_colours(methods)
    shown = table if shown is None else shown
    images = list(dict.fromkeys(table["image"]))
    ok = table[table["status"] == "ok"]
    n_failed = int((table["status"] != "ok").sum())
    k = ok["k"].dropna()
    header = (f"{len(images)} images × {len(methods)} methods, {len(table)} results, "
              f"{n_failed} failed" + (f"; k = {int(k.iloc[0])}" if len(k) else "")
              + ". Lower score is better; the gap is how far a score is above the image's lower bound.")
    rows_by_image: dict[str, list[dict]] = {}
    for row in shown.to_dict("records"):
        rows_by_image.setdefault(row["image"], []).append(row)
    if len(rows_by_image) < len(images):
        header += (f" The page shows the first {len(rows_by_image)} of {len(images)} images; "
                   f"every result is in the CSV and the summary.")
    cards = "".join(image_card(image, rows, methods, assets, details) for image, rows in rows_by_image.items())
    nav = ['<a href="#summary">Summary</a>', '<a href="#charts">Charts</a>', '<a href="#images">Images</a>',
           f'<a href="#failures">Failures ({n_failed})</a>']
    history_part = ""
    if history:
        nav.append('<a href="#history">History</a>')
        history_part = f'<h2 id="history">Run history</h2>{history_html(history, colours)}'
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    charts = charts_html(shown, summary, methods, colours) if len(ok) else "<p>No successful result.</p>"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{esc(title)}</title><style>{CSS}</style></head><body><main>'
            f'<h1>{esc(title)}</h1><p class="sub">{esc(header)}</p><nav>{"".join(nav)}</nav>'
            f'<h2 id="summary">Summary per method</h2>'
            f'{summary_html(summary, colours, summary["ratio_to_kmeans_geomean"].notna().any())}'
            f'<p class="sub">Images: successful results; the mean score is over those, so compare methods '
            f'that ran on different images by the ratio to {esc(REFERENCE)} (same images only) or the gap. '
            f'Wins: images where the method has the lowest score (ties count for each). '
            f'{esc(order_note)}</p>'
            f'<h2 id="charts">Charts</h2>{charts}'
            f'<h2 id="images">Images</h2><div class="cards">{cards}</div>'
            f'<h2 id="failures">Failures</h2>{failures_html(table)}{skipped_html(history)}{history_part}'
            f'<footer>Generated {esc(created)} by cq. Full-size files open from each thumbnail.</footer>'
            f'</main></body></html>\n')
