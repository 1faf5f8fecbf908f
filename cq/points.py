"""Weighted colour points and the objective-aware assignment that ``cq.descent`` iterates on.

Points are the histogram's exact colours or weighted bin centroids (``cq.histogram.coarsen``);
every sum over them weighs each point by its pixel count in float64, exact up to 2**53 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cq.histogram import ColorHistogram, coarsen
from cq.objective import Weights, vertex_cost

CHUNK = 1 << 13  # rows per block of the assignment: keeps the (rows, k) block in cache


@dataclass
class Points:
    """Weighted colours to quantize: exact histogram colours or bin centroids."""

    colors: np.ndarray  # (n, 3) float64
    weights: np.ndarray  # (n,) float64 pixel counts
    colors32: np.ndarray = field(init=False, repr=False)  # float32 copy for fast products

    def __post_init__(self):
        self.colors32 = self.colors.astype(np.float32)

    @property
    def n_pixels(self) -> float:
        return float(self.weights.sum())


def weighted_sums(keys: np.ndarray, weights: np.ndarray, colors: np.ndarray, size: int) -> np.ndarray:
    """(size, 3) sums of ``weights * colors`` grouped by ``keys``."""
    return np.stack([np.bincount(keys, weights=weights * colors[:, c], minlength=size) for c in range(3)], 1)


def assign_colors(colors: np.ndarray, palette: np.ndarray, weights: Weights) -> np.ndarray:
    """Objective-aware label of every colour (n, 3): the one assignment kernel of cq's methods.

    Same argmin as ``pixel_costs(..., "objective")``, but the per-colour constant
    ``(w_mse/3)*||p||^2`` is left out of the comparison and the product is float32, which makes
    it several times faster.
    """
    pal = np.asarray(palette, dtype=np.float64)
    bias = (weights.pixel_mse * (pal * pal).sum(1) + weights.mean_cost * vertex_cost(pal)).astype(np.float32)
    scaled = (-2.0 * weights.pixel_mse * pal.T).astype(np.float32)
    labels = np.empty(len(colors), dtype=np.int64)
    for s in range(0, len(colors), CHUNK):
        block = np.asarray(colors[s : s + CHUNK], dtype=np.float32) @ scaled
        block += bias
        labels[s : s + CHUNK] = block.argmin(1)
    return labels


def assign(points: Points, palette: np.ndarray, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """:func:`assign_colors` of the points, and every point's exact float64 per-pixel cost."""
    pal = np.asarray(palette, dtype=np.float64)
    labels = assign_colors(points.colors32, pal, weights)
    return labels, point_costs(points, pal, labels, weights)


def point_costs(points: Points, palette: np.ndarray, labels: np.ndarray, weights: Weights) -> np.ndarray:
    """Every point's exact float64 per-pixel cost of taking its labelled palette colour."""
    pal = np.asarray(palette, dtype=np.float64)
    diff = points.colors - pal[labels]
    cost = weights.pixel_mse * np.einsum("ij,ij->i", diff, diff)
    cost += weights.mean_cost * vertex_cost(pal)[labels]
    return cost


def cluster_moments(points: Points, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel mass and weighted centroid of every cluster (centroid undefined where mass is 0)."""
    mass = np.bincount(labels, weights=points.weights, minlength=k)
    sums = weighted_sums(labels, points.weights, points.colors, k)
    return mass, sums / np.maximum(mass, 1e-300)[:, None]


def points_score(points: Points, cost: np.ndarray, palette: np.ndarray, labels: np.ndarray,
                 weights: Weights) -> float:
    """Score of an assignment given each point's pixel term: mean of ``cost`` plus the max-cost term."""
    used = np.bincount(labels, minlength=len(palette)) > 0
    max_cost = float(vertex_cost(palette[used]).max())
    return float(cost @ points.weights) / points.n_pixels + weights.max_cost * max_cost


def binned_points(hist: ColorHistogram, bits: int, at_least: int) -> Points:
    """Bin centroids at ``bits`` per channel, or the exact colours if binning leaves <= ``at_least``."""
    if bits < 8:
        points = Points(*coarsen(hist, bits)[:2])
        if len(points.colors) > at_least:
            return points
    return exact_points(hist)


def exact_points(hist: ColorHistogram) -> Points:
    """The histogram's own colours and counts as points."""
    return Points(hist.colors.astype(np.float64), hist.counts.astype(np.float64))


def fine_points(hist: ColorHistogram, k: int, max_colors: int) -> Points:
    """The exact histogram, or for very large ones the finest binning with at most ``max_colors`` bins."""
    for bits in (8, 7, 6):
        points = binned_points(hist, bits, k)
        if len(points.colors) <= max_colors:
            return points
    return points
