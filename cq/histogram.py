"""The colour histogram: an image's distinct colours, their pixel counts, and the way back.

Every term of the score is a weighted sum over distinct colours, so methods work on the
histogram (20k-150k colours for a photograph) rather than on raw pixels (millions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BINCOUNT_MIN_PIXELS = 1 << 20  # above this a 2**24-bin count beats sorting


def pack_rgb(pixels: np.ndarray) -> np.ndarray:
    """Pack uint8 RGB triples (..., 3) into int32 keys 0xRRGGBB (channel by channel, in place:
    an (..., 3) int32 copy of an 18 MP photo would be 216 MB)."""
    p = np.asarray(pixels)
    keys = p[..., 0].astype(np.int32)
    for channel in (1, 2):
        keys <<= 8
        keys |= p[..., channel].astype(np.int32, copy=False)
    return keys


def unpack_rgb(keys: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_rgb`: int keys to uint8 RGB triples (..., 3)."""
    keys = np.asarray(keys)
    return np.stack([(keys >> 16) & 255, (keys >> 8) & 255, keys & 255], axis=-1).astype(np.uint8)


@dataclass(frozen=True)
class ColorHistogram:
    """Distinct colours of an image with their pixel counts.

    Attributes
    ----------
    colors : (n, 3) uint8, sorted by packed value.
    counts : (n,) int64, pixels of each colour; sums to the pixel count.
    inverse : (H*W,) int32 or None, index into ``colors`` of every pixel, row-major, so that
        ``colors[inverse]`` rebuilds the image; None when built from colours alone.
    shape : (H, W) of the image, or None.
    """

    colors: np.ndarray
    counts: np.ndarray
    inverse: np.ndarray | None = None
    shape: tuple[int, int] | None = None

    @classmethod
    def from_image(cls, image: np.ndarray, *, with_inverse: bool = True) -> "ColorHistogram":
        """Histogram of an (H, W, 3) uint8 image."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        keys = pack_rgb(image.reshape(-1, 3))
        if keys.size >= _BINCOUNT_MIN_PIXELS:
            bins = np.bincount(keys, minlength=1 << 24)
            uniq = np.flatnonzero(bins).astype(np.int32)
            counts = bins[uniq].astype(np.int64)
            inverse = None
            if with_inverse:
                lut = np.zeros(1 << 24, dtype=np.int32)
                lut[uniq] = np.arange(uniq.size, dtype=np.int32)
                inverse = lut[keys]
        else:
            uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
            inverse = inverse.astype(np.int32) if with_inverse else None
            counts = counts.astype(np.int64)
        return cls(unpack_rgb(uniq), counts, inverse, image.shape[:2])

    @property
    def n_colors(self) -> int:
        return len(self.counts)

    @property
    def n_pixels(self) -> int:
        return int(self.counts.sum())

    def render(self, colors_per_entry: np.ndarray) -> np.ndarray:
        """Image whose pixels take ``colors_per_entry[i]`` where the original had colour i."""
        if self.inverse is None or self.shape is None:
            raise ValueError("this histogram was built without its inverse")
        return np.asarray(colors_per_entry)[self.inverse].reshape(*self.shape, 3)


def coarsen(hist: ColorHistogram, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the histogram's colours into ``bits``-bit bins per channel.

    Returns ``(centroids, mass, bin_of)``: the (m, 3) float64 count-weighted centroid of each
    non-empty bin, its (m,) float64 pixel count, and the (n,) bin index of every histogram
    colour. A bin keeps the total weight of its pixels, so sums over bins still weigh every
    pixel of the image. Counts are summed in float64, exact up to 2**53 pixels.
    """
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    shift = 8 - bits
    q = hist.colors.astype(np.int64) >> shift
    keys = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
    used, bin_of = np.unique(keys, return_inverse=True)
    w = hist.counts.astype(np.float64)
    mass = np.bincount(bin_of, weights=w, minlength=used.size)
    sums = np.stack([np.bincount(bin_of, weights=w * hist.colors[:, c], minlength=used.size)
                     for c in range(3)], axis=1)
    return sums / mass[:, None], mass, bin_of.astype(np.int64)
