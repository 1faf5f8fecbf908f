"""What the folder network sees of an image, and the weighted colours its surrogate is scored on.

Three inputs, all cheap (a few ms on a 640x480 photo): the image's antialiased square thumbnail;
its colour histogram in ``bin_bits``-bit bins per channel (each bin's pixel share and the mean
colour of its pixels); and the lower bound's best max-cost cap of its colours, which the network's
cap is a learned multiple of (a near-white graphic's best cap is 0, a photo's 30-60). The network's palette colours are mixtures of those bin means, so
every predicted colour lies among the image's own colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cq.histogram import ColorHistogram, coarsen
from cq.objective import Weights, best_cap, vertex_cost


@dataclass(frozen=True)
class Features:
    """One image's network inputs: thumbnail (3, s, s) in [0, 1], bin shares (B,), bin means (B, 3),
    and the lower bound's max-cost cap on its 5-bit binned colours (a float32 scalar)."""

    thumb: np.ndarray
    share: np.ndarray
    means: np.ndarray
    cap_hint: np.ndarray


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """(3, size, size) float32 in [0, 1]: the image resized with antialiasing (aspect not kept)."""
    pixels = np.ascontiguousarray(image[:, :, :3])
    small = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0


def bin_centres(bits: int) -> np.ndarray:
    """(8**bits, 3) float64 centres of the ``bits``-bit bins, in bin-index order (r, g, b)."""
    side = 1 << bits
    step = 256.0 / side
    axis = (np.arange(side) + 0.5) * step
    r, g, b = np.meshgrid(axis, axis, axis, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def binned(hist: ColorHistogram, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Every bin's pixel share (8**bits,) and mean colour (8**bits, 3); an empty bin's mean is its centre."""
    shift = 8 - bits
    q = hist.colors.astype(np.int64) >> shift
    keys = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
    size = 1 << (3 * bits)
    w = hist.counts.astype(np.float64)
    mass = np.bincount(keys, weights=w, minlength=size)
    sums = np.stack([np.bincount(keys, weights=w * hist.colors[:, c], minlength=size) for c in range(3)], 1)
    means = bin_centres(bits)
    full = mass > 0
    means[full] = sums[full] / mass[full, None]
    return mass / mass.sum(), means


def features(image: np.ndarray, hist: ColorHistogram, size: int, bits: int, weights: Weights = Weights()) -> Features:
    share, means = binned(hist, bits)
    points, mass = surrogate_points(hist, 5)
    hint = np.float32(best_cap(vertex_cost(points), mass, weights))
    return Features(thumbnail(image, size), share.astype(np.float32), means.astype(np.float32), hint)


def surrogate_points(hist: ColorHistogram, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The colours the surrogate is scored on: ``bits``-bit bin centroids and their pixel shares (sum 1)."""
    points, mass, _ = coarsen(hist, bits)
    return points, mass / mass.sum()
