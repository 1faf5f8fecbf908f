"""Reading any image Pillow opens into RGB uint8, and writing indexed PNGs atomically.

Reading rules (documented in the README):
- EXIF orientation is applied.
- Grayscale, palette, CMYK, 16-bit and other modes are converted to 8-bit RGB; 16-bit grey
  values are scaled by 1/257 (16-bit colour PNGs come from Pillow as their high bytes); float samples (TIFF mode F) are scaled as their range says (0..1 by 255).
- Transparency (RGBA, LA, palette with transparency) is composited over a background colour
  (``background``, default white); ``background=None`` makes transparent input an error.
- An animated file gives its first frame, and the result says so in its notes.
- Pillow's decompression-bomb guard stays on: ``max_pixels`` (default Pillow's limit) refuses
  larger images with an error rather than a warning.
Every failure raises :class:`ImageError` whose message names the file.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cq.fsutil import atomic_path

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageError(Exception):
    """An input image cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class LoadedImage:
    """An image as cq sees it: (H, W, 3) uint8 RGB, plus what was done to get there."""

    pixels: np.ndarray
    notes: tuple[str, ...] = ()
    mode: str = "RGB"


COMPOSITE_NOTE = "transparency composited over ({}, {}, {})"  # a record's note; the report reads it back


def composited_over(notes: str | None) -> tuple[int, int, int] | None:
    """The background a transparent image was composited over, as its record's notes say."""
    found = re.search(re.escape(COMPOSITE_NOTE).replace(r"\{\}", r"(\d+)"), notes or "")
    return tuple(int(v) for v in found.groups()) if found else None


def load_image(path: str | os.PathLike, *, background: tuple[int, int, int] | None = (255, 255, 255),
               max_pixels: int | None = DEFAULT_MAX_PIXELS, data: bytes | None = None,
               preview: int | None = None) -> LoadedImage:
    """Read ``path`` into RGB uint8 following the module's rules; raise ImageError on failure.

    ``data``: the file's bytes, already read (a job reads its image once and hashes those
    very bytes); ``path`` then only names it in messages.
    ``preview``: for pictures that will be shrunk (thumbnails), a JPEG is decoded at 1/2 to
    1/8 scale where both sides stay at least this many pixels (libjpeg's DCT scaling: a
    50 MP photo decodes ~15x faster). Never for a method: it gets every pixel."""
    path = Path(path)
    try:
        if (len(data) if data is not None else path.stat().st_size) == 0:
            raise ImageError(f"{path}: empty file (0 bytes)")
        with _bomb_guard(max_pixels), Image.open(io.BytesIO(data) if data is not None else path) as im:
            if preview:
                im.draft("RGB", (preview, preview))  # a no-op for formats other than JPEG
            return _to_rgb(im, path, background)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's message names 2x the limit above 2x
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(pixels.group(1)):,} pixels, " if pixels else ""
        raise ImageError(f"{path}: refused as a decompression bomb ({size}over the limit of "
                         f"{max_pixels:,} pixels, read.max_pixels)") from e
    except Image.UnidentifiedImageError as e:
        raise ImageError(f"{path}: not an image Pillow can read") from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: unreadable or corrupt image ({e})") from e


@contextmanager
def _bomb_guard(max_pixels: int | None):
    """Pillow's bomb check with our limit, raised as an error above the limit (not only 2x)."""
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombWarning as e:
        raise Image.DecompressionBombError(str(e)) from e
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _to_rgb(im: Image.Image, path: Path, background) -> LoadedImage:
    notes = []
    n_frames = getattr(im, "n_frames", 1)
    if n_frames > 1:
        notes.append(f"animated: first frame of {n_frames} used")
    mode = im.mode
    im.load()
    ImageOps.exif_transpose(im, in_place=True)  # in place: otherwise a full copy, even unrotated
    if im.mode == "F":
        im = Image.fromarray(_float_to_uint8(np.asarray(im, dtype=np.float64)), "L")
        notes.append("float: scaled to 8 bits by its range")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        scale = 257.0 if arr.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
        im = Image.fromarray(np.clip(np.rint(arr / scale), 0, 255).astype(np.uint8), "L")
        notes.append(f"{mode}: scaled to 8 bits")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("LA", "La", "PA"):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "RGBa"):
        alpha = np.asarray(im.getchannel("A"))
        if alpha.min() < 255:
            if background is None:
                raise ImageError(f"{path}: has transparency and no background colour is configured")
            notes.append(COMPOSITE_NOTE.format(*background))
        base = Image.new("RGBA", im.size, tuple(background or (255, 255, 255)) + (255,))
        im = Image.alpha_composite(base, im)
    if im.mode != "RGB":
        if im.mode not in ("RGBA",):
            notes.append(f"converted from {im.mode}")
        im = im.convert("RGB")
    pixels = np.asarray(im, dtype=np.uint8)
    if pixels.size == 0:
        raise ImageError(f"{path}: image has no pixels")
    return LoadedImage(np.ascontiguousarray(pixels), tuple(notes), mode)


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float samples to 0..255 as their range says: 0..1 (the usual convention) is scaled by
    255, 0..255 kept, 0..65535 divided by 257, any other range stretched from its min to its
    max; NaN becomes 0."""
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        scaled = arr * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = arr
    elif lo >= 0 and hi <= 65535:
        scaled = arr / 257.0
    else:
        scaled = (arr - lo) * (255.0 / (hi - lo or 1.0))
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)), 0, 255).astype(np.uint8)


def read_back(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The palette ((m, 3) uint8) and index image ((H, W) uint8) of an indexed PNG this package
    wrote, as a decoder reads them (no size limit: it is our own output). Not rendered to RGB:
    on a large image that would be a second full copy of it."""
    with _bomb_guard(None), Image.open(path) as im:
        if im.mode != "P":
            raise ValueError(f"{path}: written as mode {im.mode}, not an indexed (P) PNG")
        index = np.asarray(im, dtype=np.uint8)
        palette = np.asarray(im.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
    return palette, index


def write_indexed_png(path: str | os.PathLike, palette: np.ndarray, index: np.ndarray) -> None:
    """Write an indexed (mode P) PNG whose palette holds exactly ``palette``'s colours.

    ``index`` is (H, W) with values in ``range(len(palette))``; reading the file back and
    converting to RGB gives ``palette[index]`` exactly.
    """
    palette = np.asarray(palette, dtype=np.uint8)
    if len(palette) > 256:
        raise ValueError(f"an indexed PNG holds at most 256 colours, got {len(palette)}")
    im = Image.fromarray(np.asarray(index, dtype=np.uint8), "P")
    im.putpalette(palette.reshape(-1).tolist(), rawmode="RGB")
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", optimize=False)
