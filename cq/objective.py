"""The score every method is judged by, exactly as ``docs/objective.md`` defines it, and its lower bound.

    score = w_mse * MSE + w_max * max_cost + w_mean * mean_cost

where a colour's cost is its Euclidean distance to the nearest vertex of the RGB cube. Per
pixel the score is ``(w_mse/3) * ||p - q||^2 + w_mean * cost(q)``, plus ``w_max * max_cost``
once; everything is computed on colour histograms, never on an (H*W, 8, 3) array.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cq.histogram import ColorHistogram, pack_rgb, unpack_rgb

DEFAULT_K = 37

# The version of the scoring code. It is part of every job's specification and of every record,
# so a change here (a fix of the arithmetic, a new bound) recomputes every result it affects.
# 2: exact integer MSE (int32 wrapped above ~1 MP), exactly-k finalisation for few-colour
#    images, a lower bound that knows k.
# 3: the lower bound knows that k < 8 colours have at most k nearest vertices (cq.bound, fact 4).
SCORING_VERSION = "3"


@dataclass(frozen=True)
class Weights:
    """The three weights of the score (defaults 2, 21, 42)."""

    mse: float = 2.0
    max_cost: float = 21.0
    mean_cost: float = 42.0

    @property
    def pixel_mse(self) -> float:
        """Weight of ``||p - q||^2`` per pixel: MSE averages over 3 channels."""
        return self.mse / 3.0

    @property
    def vertex_pull(self) -> float:
        """How far the best colour of a cluster moves toward its vertex: 3*w_mean/(2*w_mse)."""
        return 1.5 * self.mean_cost / self.mse if self.mse > 0 else np.inf

    def as_dict(self) -> dict:
        return asdict(self)


def vertex_cost(colors: np.ndarray) -> np.ndarray:
    """Distance of each colour (..., 3) to the nearest RGB cube vertex, in 0..255 units.

    The nearest vertex is found per channel (0 or 255, whichever is closer), so this equals
    the minimum over the 8 vertices without building them.
    """
    c = np.asarray(colors, dtype=np.float64)
    d = np.minimum(c, 255.0 - c)
    return np.sqrt(np.einsum("...i,...i->...", d, d))


def nearest_vertex(colors: np.ndarray) -> np.ndarray:
    """The nearest cube vertex of each colour (..., 3), as float64 0/255 values."""
    c = np.asarray(colors, dtype=np.float64)
    return np.where(c > 127.5, 255.0, 0.0)


@dataclass(frozen=True)
class Score:
    """Every part of the score of one quantized image."""

    score: float
    mse: float
    mean_cost: float
    max_cost: float
    palette_score: float
    palette_mean_cost: float
    n_colors: int

    def as_dict(self) -> dict:
        return asdict(self)


def _mse(original: np.ndarray, quantized: np.ndarray, chunk: int = 1 << 22) -> float:
    """Mean of squared differences over all H*W*3 values, exact at any size.

    Each chunk's squares (at most 255**2) are summed in int64 and the chunks in a Python int,
    so nothing wraps or rounds before the one final division; chunks bound the memory.
    """
    a = original.reshape(-1)
    b = quantized.reshape(-1)
    total = 0
    for start in range(0, a.size, chunk):
        d = a[start : start + chunk].astype(np.int32) - b[start : start + chunk].astype(np.int32)
        d *= d
        total += int(d.sum(dtype=np.int64))
    return total / a.size


def score_parts(mse: float, colors: np.ndarray, counts: np.ndarray, weights: Weights) -> Score:
    """Assemble a :class:`Score` from the MSE and the quantized image's colour histogram."""
    costs = vertex_cost(colors)
    mean_cost = float(np.dot(costs, counts) / counts.sum())
    max_cost = float(costs.max())
    palette_mean_cost = float(costs.mean())
    base = weights.mse * mse + weights.max_cost * max_cost
    return Score(
        score=base + weights.mean_cost * mean_cost,
        mse=float(mse),
        mean_cost=mean_cost,
        max_cost=max_cost,
        palette_score=base + weights.mean_cost * palette_mean_cost,
        palette_mean_cost=palette_mean_cost,
        n_colors=len(colors),
    )


def score(original: np.ndarray, quantized: np.ndarray, weights: Weights = Weights()) -> Score:
    """Score a quantized image against its original; both (H, W, 3) uint8."""
    if original.shape != quantized.shape:
        raise ValueError(f"shapes differ: original {original.shape}, quantized {quantized.shape}")
    hist = ColorHistogram.from_image(quantized, with_inverse=False)
    return score_parts(_mse(original, quantized), hist.colors, hist.counts, weights)


def score_indexed(original: np.ndarray, palette: np.ndarray, index: np.ndarray,
                  weights: Weights = Weights(), *, chunk: int = 1 << 19) -> Score:
    """Score the image ``palette[index]`` ((m, 3) uint8, (H, W) indices) against its original
    (H, W, 3) uint8, as :func:`score` would, without rendering it whole: squared errors and
    per-entry pixel counts are summed in integers over blocks of about ``chunk`` pixels, so a
    large image costs a block's memory, not two more full copies. Equal entries merge."""
    if original.shape != (*index.shape, 3):
        raise ValueError(f"shapes differ: original {original.shape}, index image {index.shape}")
    pal = np.asarray(palette, dtype=np.int32)
    rows = max(1, chunk // max(index.shape[1], 1))
    total, counts = 0, np.zeros(len(pal), dtype=np.int64)
    for top in range(0, index.shape[0], rows):
        block = index[top : top + rows]
        d = original[top : top + rows].astype(np.int32) - pal[block]
        np.square(d, out=d)  # at most 255**2: no int32 overflow
        total += int(d.sum(dtype=np.int64))
        counts += np.bincount(block.reshape(-1), minlength=len(pal))
    used = counts > 0
    uniq, inv = np.unique(pack_rgb(palette[used]), return_inverse=True)
    return score_parts(total / original.size, unpack_rgb(uniq), np.bincount(inv, weights=counts[used]), weights)


def score_assignment(
    hist: ColorHistogram, palette: np.ndarray, labels: np.ndarray, weights: Weights = Weights()
) -> Score:
    """Score the image in which histogram colour i takes ``palette[labels[i]]``.

    Exact and cheap: never renders the image. Unused palette entries are ignored.
    """
    return score_entries(hist.colors, hist.counts, palette, labels, weights)


def score_entries(colors: np.ndarray, counts: np.ndarray, palette: np.ndarray, labels: np.ndarray,
                  weights: Weights = Weights()) -> Score:
    """Score the image in which ``counts[i]`` pixels of colour ``colors[i]`` take
    ``palette[labels[i]]``; a colour may appear in several entries (split between outputs).

    The squared error is summed in int64 (exact: at most 3*255**2 per pixel), so the MSE is
    exact at any image size.
    """
    pal = np.asarray(palette)
    if pal.dtype != np.uint8:
        raise ValueError(f"palette must be uint8, got {pal.dtype}")
    counts = np.asarray(counts, dtype=np.int64)
    diff = colors.astype(np.int64) - pal[labels].astype(np.int64)
    sq = np.einsum("ij,ij->i", diff, diff)
    mse = int(np.dot(sq, counts)) / (3.0 * int(counts.sum()))
    # Distinct colours of the rendered image: equal palette entries merge.
    uniq, inv = np.unique(pack_rgb(pal)[labels], return_inverse=True)
    return score_parts(mse, unpack_rgb(uniq), np.bincount(inv, weights=counts), weights)


def best_cap(dist: np.ndarray, mass: np.ndarray, weights: Weights = Weights(),
             n_pixels: float | None = None) -> float:
    """The max-cost cap ``T`` minimising ``w_max*T + sum_j mass_j * g_j(clip(d_j - pull, 0, T)) / n``.

    ``d_j`` (``dist``) is a colour's or cluster's distance to its nearest vertex and
    ``g_j(r) = (w_mse/3)(d_j - r)^2 + w_mean*r`` its cost at radius ``r`` from the vertex. The
    function is convex in ``T``; its derivative ``w_max - (2 w_mse / n) * G(T)``, with
    ``G(T) = sum_j mass_j * max(f_j - T, 0)`` and ``f_j = max(d_j - pull, 0)``, is piecewise
    linear and increasing, so its root is solved on the one linear piece that holds it (colours
    sorted by ``f``, cumulative sums): exact, in one sort. Shared by the lower bound and by the
    methods that place colours under the cap.
    """
    n = float(mass.sum()) if n_pixels is None else n_pixels
    free = np.maximum(np.asarray(dist, dtype=np.float64) - weights.vertex_pull, 0.0)
    if weights.pixel_mse <= 0 or free.size == 0:
        return 0.0
    target = weights.max_cost * n / (2.0 * weights.pixel_mse)  # the root is where G(T) = target
    order = np.argsort(-free, kind="stable")
    f, m = free[order], np.asarray(mass, dtype=np.float64)[order]
    heavy, moment = np.cumsum(m), np.cumsum(m * f)  # sums over the i + 1 largest f
    if moment[-1] <= target:  # G(0) <= target: the derivative is >= 0 from T = 0
        return 0.0
    at_breaks = np.concatenate([[0.0], moment[:-1] - f[1:] * heavy[:-1]])  # G(f_i), nondecreasing
    over = int(np.searchsorted(at_breaks, target, side="right"))  # colours above the root
    return float(np.clip((moment[over - 1] - target) / heavy[over - 1], 0.0, f[0]))


def ideal_colors(colors: np.ndarray, cap: float, weights: Weights = Weights()) -> np.ndarray:
    """Each colour's own best output under ``cap``: on the segment toward its nearest vertex,
    at distance ``clip(D - pull, 0, cap)`` from it (docs/objective.md)."""
    vertex = nearest_vertex(colors)
    dist = vertex_cost(colors)
    radius = np.clip(dist - weights.vertex_pull, 0.0, cap)
    scale = np.divide(radius, dist, out=np.zeros_like(dist), where=dist > 0)
    return vertex + (np.asarray(colors, dtype=np.float64) - vertex) * scale[:, None]


def lower_bound_any_k(hist: ColorHistogram, weights: Weights = Weights()) -> float:
    """The best score any quantization of this histogram can reach, with any number of colours.

    Every pixel takes its own best colour on the segment toward its nearest vertex, at
    distance ``r = clip(D - pull, 0, T)`` from it, under a common max-cost cap ``T``; the
    bound is the minimum over ``T`` (:func:`best_cap`). ``cq.bound.lower_bound`` knows k (a distinct
    name: ``cq.lower_bound`` is that one).
    """
    dist = vertex_cost(hist.colors)
    counts = hist.counts.astype(np.float64)
    cap = best_cap(dist, counts, weights)
    r = np.clip(dist - weights.vertex_pull, 0.0, cap)
    per = weights.pixel_mse * (dist - r) ** 2 + weights.mean_cost * r
    return float(weights.max_cost * cap + np.dot(per, counts) / counts.sum())
