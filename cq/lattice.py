"""The uint8 colours near the cube's vertices: few of them, and they decide small max costs.

A uint8 colour's vertex distance is the square root of an integer, and each vertex owns the
colours whose offsets from it are 0..127 per channel, so the colours within a radius of a vertex
can be enumerated from one octant of offsets. The lower bound (``cq.bound``) and ``direct``'s
search under small caps both work from this enumeration.
"""

from __future__ import annotations

import functools

import numpy as np

HALF = 127  # largest offset of a uint8 channel from its nearest vertex (0 or 255)
VERTICES = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])


@functools.lru_cache(maxsize=64)
def octant(radius_sq: int) -> np.ndarray:
    """Offsets ``x`` (m, 3) int64, 0 <= x_i <= 127, with ``|x|^2 <= radius_sq``, sorted by ``|x|^2``."""
    r = min(int(np.floor(np.sqrt(radius_sq))), HALF)
    grid = np.stack(np.meshgrid(*[np.arange(r + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    sq = (grid * grid).sum(1)
    keep = sq <= radius_sq
    order = np.argsort(sq[keep], kind="stable")
    grid = grid[keep][order]
    grid.flags.writeable = False  # cached: shared by every caller
    return grid


def radii(limit: float) -> np.ndarray:
    """The distinct vertex distances ``sqrt(m)`` of uint8 colours up to ``limit``, ascending."""
    return np.sqrt(np.unique((octant(_floor_sq(limit)) ** 2).sum(1)).astype(np.float64))


def colors_within(cap: float) -> np.ndarray:
    """Every uint8 colour at distance <= ``cap`` from some cube vertex, (m, 3) int64."""
    offsets = octant(_floor_sq(cap))
    corner = VERTICES[:, None, :]
    points = np.where(corner > 0, corner - offsets[None], corner + offsets[None])
    return np.unique(points.reshape(-1, 3), axis=0)


def kth_smallest_sq(k: int) -> int:
    """The squared k-th smallest vertex distance among all 2**24 uint8 colours (with multiplicity).

    The number of colours with distance^2 <= m is 8 times the octant's offsets with ``|x|^2 <= m``.
    """
    if not 1 <= k <= 1 << 24:
        raise ValueError(f"k must be in 1..2**24, got {k}")
    radius_sq = 4
    while True:
        sq = (octant(radius_sq) ** 2).sum(1)  # sorted ascending
        if 8 * len(sq) >= k:
            return int(sq[(k - 1) // 8])
        radius_sq = min(4 * radius_sq, 3 * HALF**2)


def kth_smallest_cost(k: int) -> float:
    """The smallest max cost of any k distinct uint8 colours (sqrt(2) for k = 37: 8 vertices at 0,
    24 colours at 1, 24 at sqrt(2))."""
    return float(np.sqrt(kth_smallest_sq(k)))


def _floor_sq(radius: float) -> int:
    """The largest integer m with sqrt(m) <= radius (radius itself may be a rounded sqrt)."""
    return int(np.floor(radius * radius + 1e-9))
