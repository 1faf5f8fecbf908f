"""A train/test set of real photographs for ``cnn_folder``, split by source picture.

Sources: Debian's wallpaper packages (``/usr/share/backgrounds``, ``/usr/share/wallpapers``,
``/usr/share/images/desktop-base``; several files are sizes of one picture), scikit-image's bundled
colour photographs and scikit-learn's two sample images. Files that show the same picture (their
16x16 thumbnails, scaled to one mean brightness, nearly equal) are one source, kept once. Sources
are split into train and test by a hash of their group (a KDE wallpaper's folder holds its sizes,
portrait crops and dark rendering; GNOME's -d/-l files are one picture), so no picture, in any
size, crop or rendering, is on both sides. There are fewer
distinct sources than 200, so the training set is several random crops of each training source;
the test set is one source of each test group, whole, downscaled.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

FOLDERS = ("/usr/share/backgrounds", "/usr/share/wallpapers", "/usr/share/images/desktop-base")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
SAME_PICTURE = 12.0  # mean absolute difference of 16x16 thumbnails (0..255) below which two files match


@dataclass
class Source:
    """One picture: its name (first file or bundled name) and its pixels, downscaled."""

    name: str
    pixels: np.ndarray

    @property
    def group(self) -> str:
        """What decides the side: a KDE wallpaper's folder (its sizes, portrait crops and dark
        rendering are one picture), a GNOME wallpaper's name without its -d/-l (dark/light) suffix."""
        match = re.match(r"(/usr/share/wallpapers/[^/]+)/", self.name)
        if match:
            return match.group(1)
        return re.sub(r"-[dl](\.webp)$", r"\1", self.name)


def _downscale(pixels: np.ndarray, longest: int) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(pixels[..., :3]))
    scale = longest / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    return np.asarray(image.convert("RGB"))


def _files() -> list[str]:
    found = []
    for folder in FOLDERS:
        for root, _, names in os.walk(folder, followlinks=True):
            found += [os.path.join(root, n) for n in names if n.lower().endswith(EXTENSIONS)]
    return sorted({os.path.realpath(p) for p in found})


def _bundled() -> list[tuple[str, np.ndarray]]:
    from sklearn.datasets import load_sample_images

    from _photos import PHOTOS

    out = [(f"skimage:{name}", np.asarray(load())[..., :3]) for name, load in PHOTOS.items()]
    data = load_sample_images()
    out += [(f"sklearn:{os.path.basename(f)}", img) for f, img in zip(data.filenames, data.images)]
    return out


def sources(longest: int = 512) -> list[Source]:
    """Every distinct picture, downscaled so that its longest side is at most ``longest``."""
    items = []
    for path in _files():
        try:
            with Image.open(path) as image:
                image.draft("RGB", (2 * longest, 2 * longest))
                items.append((path, np.asarray(image.convert("RGB"))))
        except OSError:
            continue
    items += _bundled()
    kept, thumbs = [], []
    for name, pixels in items:
        if min(pixels.shape[:2]) < 64:
            continue
        thumb = np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).resize((16, 16)), dtype=float)
        thumb = 128 * thumb / max(thumb.mean(), 1.0)  # dark pictures compared by their relative contrast
        if any(np.abs(thumb - t).mean() < SAME_PICTURE for t in thumbs):
            continue
        thumbs.append(thumb)
        kept.append(Source(name, _downscale(pixels, longest)))
    return kept


def is_test(source: Source, share: float = 0.25) -> bool:
    """Whether a source belongs to the test side (a hash of its name: stable, independent of order)."""
    digest = hashlib.sha256(source.group.encode()).digest()
    return int.from_bytes(digest[:4], "big") < share * 2**32


def crops(source: Source, count: int, side: tuple[int, int], rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random crops of a source, each a random share (50-100%) of it resized to fit ``side``."""
    h, w = source.pixels.shape[:2]
    out = []
    for _ in range(count):
        share = rng.uniform(0.5, 1.0)
        ch, cw = max(32, int(h * share)), max(32, int(w * share))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        out.append(_downscale(source.pixels[y:y + ch, x:x + cw], int(rng.integers(*side))))
    return out


def split(n_train: int = 200, longest: int = 512, crop_side=(192, 320), seed: int = 0):
    """(train images, test images, description): ``n_train`` crops of the training sources, and the
    test sources whole (longest side ``longest``)."""
    all_sources = sources(longest)
    groups = {}
    for s in all_sources:  # one picture of each test group: its other sizes and renderings would weigh it twice
        if is_test(s):
            groups.setdefault(s.group, s)
    test = list(groups.values())
    train = [s for s in all_sources if not is_test(s)]
    rng = np.random.default_rng(seed)
    per = -(-n_train // len(train))
    images = [c for s in train for c in crops(s, per, crop_side, rng)]
    order = rng.permutation(len(images))[:n_train]
    train_images = [images[i] for i in sorted(order)]
    text = (f"{len(all_sources)} distinct source pictures ({len(train)} train, {len(test)} test, split by "
            f"source); train: {len(train_images)} crops, {per} or fewer per training source, longest side "
            f"{crop_side[0]}-{crop_side[1]} px; test: one source of each test group, whole, longest side <= {longest} px")
    return train_images, [s.pixels for s in test], [s.name for s in test], text
