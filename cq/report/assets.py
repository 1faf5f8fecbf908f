"""The page's pictures: thumbnails of originals and outputs, and palette strips, in ``report_files/``.

- Originals are read with cq's rules (the bomb guard stays) and kept as JPEG, or as PNG with
  their alpha when they have transparency (the page draws them on a checkerboard). A
  transparent original also gets its *composite*: the opaque image the methods quantized,
  over the background its records name (``read.background``).
- Quantized outputs are resized with NEAREST to PNG, so their colours stay the palette's.
- Thumbnails are named by content, never by path or time: an original by the sha256 of its
  bytes (its record's, else hashed here), an output by the job that wrote it (fingerprint and
  time of its record). So content replaced under a preserved mtime gets a new thumbnail, and
  one that exists is current. Palette strips are named by the palette. Files no page uses
  any more are deleted after the page is written (:func:`prune_assets`). Every file is
  written atomically (without fsync: cheap to remake).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from cq.discover import result_path
from cq.imageio import ImageError, composited_over, load_image
from cq.fsutil import atomic_path

log = logging.getLogger(__name__)

THUMB_PX = 160
PREVIEW_PX = 3 * THUMB_PX  # originals are decoded at least this large: thumbnail's reducing_gap 3
ASSETS_DIR = "report_files"
PALETTE_COLUMNS = 13


ASSET_KINDS = ("orig", "comp", "q", "pal")


def asset_name(kind: str, key: str, suffix: str) -> str:
    """The file name under report_files/ for a content key (hashed: safe for any name)."""
    digest = hashlib.sha1(f"{THUMB_PX} {key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return f"{kind}/{digest}{suffix}"


def fresh(target: Path) -> bool:
    """True when ``target`` exists and is not empty: its name says which content it shows."""
    try:
        return target.stat().st_size > 0
    except OSError:
        return False


def content_hash(path: Path) -> str | None:
    """sha256 of a file's bytes (for an image no record hashed), None when unreadable."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def thumb_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, THUMB_PX / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _with_alpha(source: Path) -> Image.Image | None:
    """The original as RGBA when it has transparency (already through the bomb guard), else None."""
    with Image.open(source) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
            im = im.convert("RGBA")
            return im if np.asarray(im.getchannel("A")).min() < 255 else None
    return None


def thumbnail_original(source: Path, target: Path) -> bool:
    """Write a thumbnail of an original; False when unreadable.

    A ``.png`` target keeps the alpha of a transparent original (:func:`make_assets` picks
    the suffix with :func:`has_alpha`); a ``.jpg`` one is opaque.
    """
    if fresh(target):
        return True
    try:
        loaded = load_image(source, preview=PREVIEW_PX)  # the bomb guard: a refused image gets no thumbnail
    except ImageError:
        return False
    im = Image.fromarray(loaded.pixels, "RGB")
    if target.suffix == ".png":
        im = _with_alpha(source) or im
    im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with atomic_path(target, fsync=False) as tmp:
        if target.suffix == ".png":
            im.save(tmp, format="PNG")
        else:
            im.save(tmp, format="JPEG", quality=82, optimize=True)
    return True


def thumbnail_composite(source: Path, target: Path, background: tuple[int, int, int]) -> bool:
    """Write an opaque JPEG thumbnail of a transparent original composited over ``background``:
    what the methods were given to quantize."""
    if fresh(target):
        return True
    try:
        loaded = load_image(source, background=background, preview=PREVIEW_PX)
    except ImageError:
        return False
    im = Image.fromarray(loaded.pixels, "RGB")
    im.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.LANCZOS, reducing_gap=3.0)
    with atomic_path(target, fsync=False) as tmp:
        im.save(tmp, format="JPEG", quality=82, optimize=True)
    return True


def has_alpha(source: Path) -> bool:
    """Whether an image file declares transparency (reads the header only)."""
    try:
        with Image.open(source) as im:
            return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def thumbnail_quantized(source: Path, target: Path) -> bool:
    """Write a NEAREST-resized PNG thumbnail of a quantized output (its palette stays exact)."""
    if fresh(target):
        return True
    try:
        with Image.open(source) as im:
            im.load()
            small = im.resize(thumb_size(*im.size), Image.Resampling.NEAREST)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    with atomic_path(target, fsync=False) as tmp:
        # zlib level 1: 0.4 ms, not 0.94 ms at the default 6, for 15% more bytes (6.2 KB, not
        # 5.4); optimize=True: twice the time for 0.2% smaller
        small.save(tmp, format="PNG", compress_level=1)
    return True


def sorted_palette(palette) -> np.ndarray:
    """The palette as (n, 3) uint8 sorted by luma, so strips read dark to light."""
    colours = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    luma = colours @ np.array([0.299, 0.587, 0.114])
    return colours[np.argsort(luma, kind="stable")]


def palette_strip(palette, target: Path) -> None:
    """Write the palette as a tiny RGBA PNG, one pixel per colour in rows of PALETTE_COLUMNS.

    The page shows it scaled up with ``image-rendering: pixelated``: one square per colour.
    """
    if fresh(target):
        return
    colours = sorted_palette(palette)
    rows = max(1, -(-len(colours) // PALETTE_COLUMNS))
    grid = np.zeros((rows * PALETTE_COLUMNS, 4), dtype=np.uint8)
    grid[:len(colours), :3], grid[:len(colours), 3] = colours, 255
    with atomic_path(target, fsync=False) as tmp:
        Image.fromarray(grid.reshape(rows, PALETTE_COLUMNS, 4), "RGBA").save(tmp, format="PNG")


def palette_name(palette) -> str:
    return "pal/" + hashlib.sha1(sorted_palette(palette).tobytes()).hexdigest()[:20] + ".png"


def quantized_png(results_dir: Path, method: str, image: str) -> Path | None:
    """Where the pipeline wrote an image's output for a method, or None for an outside path."""
    if Path(image).is_absolute() or image.startswith("("):
        return None
    return Path(result_path(str(results_dir), method, image, ".png"))


def make_assets(table: pd.DataFrame, details: dict, results_dir: Path, input_dir: Path,
                page_dir: Path, workers: int | None = None) -> dict:
    """Write the thumbnails and palette strips; return URLs (relative to the page) by key.

    Keys: ``("orig", image)``, ``("comp", image)`` (transparent originals only),
    ``("q", image, method)``, ``("pal", image, method)``, plus ``("href-orig", image)`` /
    ``("href-q", image, method)`` linking the full files (only where a thumbnail could be
    made, so that no link points at a missing file). URLs are percent-quoted. Work runs on a
    thread pool (Pillow releases the GIL while decoding).
    """
    results_dir, page_dir = Path(results_dir).resolve(), Path(page_dir).resolve()
    root = page_dir / ASSETS_DIR
    tasks, urls = [], {}  # task: (kind, key, writer, source, asset name)
    firsts = table.groupby("image", sort=False)[["image_path", "notes"]].agg(_first_text)
    hashes = {}  # the sha256 of an image's bytes as its records have it (all agree when current)
    for (image, _), detail in details.items():
        hashes[image] = hashes.get(image) or detail.get("sha256")
    for image, (path, notes) in firsts.iterrows():
        if not path:
            continue
        source = Path(path) if Path(path).is_absolute() or Path(path).exists() else input_dir / image
        source = source.resolve()
        digest = hashes.get(image) or content_hash(source)
        if digest is None:
            continue
        alpha = has_alpha(source)
        tasks.append(("orig", (image,), thumbnail_original, source,
                      asset_name("orig", digest, ".png" if alpha else ".jpg")))
        background = composited_over(notes) if alpha else None
        if background is not None:
            composite = functools.partial(thumbnail_composite, background=background)
            tasks.append(("comp", (image,), composite, source, asset_name("comp", f"{digest} {background}", ".jpg")))
    for row in table[table["status"] == "ok"].itertuples():
        png = quantized_png(results_dir, row.method, row.image)
        detail = details.get((row.image, row.method), {})
        if png is not None:  # results_dir is resolved: png is absolute
            key = f"{detail.get('sha256')} {row.method} {detail.get('output')}"
            tasks.append(("q", (row.image, row.method), thumbnail_quantized, png, asset_name("q", key, ".png")))
        if detail.get("palette"):
            urls["pal", row.image, row.method] = _palette_asset(detail["palette"], root)
    with ThreadPoolExecutor(workers or min(8, usable_cpus())) as pool:
        done = pool.map(lambda t: _safely(t[2], t[3], root / t[4]), tasks)
        for (kind, key, _, source, name), ok in zip(tasks, done):
            if ok:
                urls[(kind, *key)] = quote(f"{ASSETS_DIR}/{name}")
                if kind != "comp":
                    urls[(f"href-{kind}", *key)] = relative_url(source, page_dir)
    return {k: v for k, v in urls.items() if v}


def _first_text(values: pd.Series) -> str:
    """The first non-empty text of a column's group ('' when none)."""
    return next((v for v in values if isinstance(v, str) and v), "")


def prune_assets(page_dir: Path, urls) -> int:
    """Delete the files under report_files/ that none of ``urls`` (the page's) names; return
    how many. Runs after the page is replaced, so no page in place loses a picture."""
    root = Path(page_dir) / ASSETS_DIR
    keep = {unquote(u)[len(ASSETS_DIR) + 1:] for u in urls if isinstance(u, str) and u.startswith(ASSETS_DIR + "/")}
    removed = 0
    for kind in ASSET_KINDS:
        for path in (root / kind).glob("*") if (root / kind).is_dir() else ():
            if f"{kind}/{path.name}" not in keep and not path.name.startswith(".") and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


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
    return quote(f"{ASSETS_DIR}/{name}")


def usable_cpus() -> int:
    """CPUs this process may run on (a cluster job's allocation, not the whole node)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def relative_url(target: Path, page_dir: Path) -> str:
    """A relative, percent-quoted URL from the page's folder to ``target`` (both absolute)."""
    try:
        rel = os.path.relpath(target, page_dir)
    except ValueError:  # another drive on Windows
        return Path(target).as_uri()
    return quote(rel.replace(os.sep, "/"))
