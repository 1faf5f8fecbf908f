"""Shared fixtures: the repository root and a folder of tiny real photographs."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# Relative path -> (scikit-image photo, crop origin). Odd names on purpose: a space, quotes,
# markup and non-ASCII letters; rocket.jpg and rocket.png share a stem.
TINY_PHOTOS = {
    "chelsea.jpg": ("chelsea", (100, 120)),
    "rocket.jpg": ("rocket", (200, 220)),
    "rocket.png": ("rocket", (250, 250)),
    'Ünï côdé/astro "naut" <script>.png': ("astronaut", (80, 200)),
}


def tiny_photo(name: str, origin: tuple[int, int], size=(48, 32)) -> np.ndarray:
    """A size[0] x size[1] crop of a scikit-image photograph (>= 37 distinct colours)."""
    from skimage import data

    y, x = origin
    return getattr(data, name)()[y: y + size[1], x: x + size[0], :3]


def write_tiny_photos(folder: Path) -> list[str]:
    """Write TINY_PHOTOS under ``folder``; return their relative paths."""
    for rel, (name, origin) in TINY_PHOTOS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(tiny_photo(name, origin))).save(path, quality=95)
    return sorted(TINY_PHOTOS)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
