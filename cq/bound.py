"""A lower bound on the score that knows the output has exactly ``k`` distinct uint8 colours.

``cq.objective.lower_bound_any_k`` lets every pixel take its own real-valued colour, any number of
them; on images whose best cap is small (graphics, near-white scans, dark photographs, images
with fewer than k colours) it is far below anything reachable. Three facts about uint8 colours
(``cq.lattice``) close most of that gap:

1. **The cap.** ``k`` distinct colours of cost <= max_cost exist only if at least ``k`` uint8
   colours have cost <= max_cost: ``max_cost >= c_k``, the k-th smallest cost of all 2**24
   colours (k = 37: 8 vertices at 0, 24 colours at 1, 24 at sqrt(2), so sqrt(2)). A cost is the
   square root of an integer, so max_cost is one of the radii ``sqrt(m)``.
2. **The lattice.** Under a cap ``T`` a pixel can only take one of the few uint8 colours within
   ``T`` of a vertex (1 at distance 0 per vertex, 3 more within 1, 3 more within sqrt(2), ...).
3. **First use.** Each of the k colours is taken by at least one pixel, even if no pixel wants it.
4. **Few vertices.** With k < 8 colours, at most k vertices are some output colour's nearest.

Proof. Take any output with exactly ``k`` distinct uint8 colours and any assignment (pixels of one
input colour may split); let ``T`` be its max cost, so ``T = sqrt(m) >= c_k`` (fact 1). A pixel
``p`` taking colour ``q`` (uint8, ``cost(q) <= T``) pays ``f_p(q) = (w_mse/3)||p - q||^2 +
w_mean*cost(q) >= G_p(T)``, the least of ``f_p`` over such ``q``, so the score is at least
``w_max*T + (sum_p G_p(T) + X)/n`` with the excess ``X = sum_p (f_p(q_p) - G_p(T)) >= 0``. With ``D``
the pixel's distance to its nearest vertex ``v`` and ``E`` to the second nearest:

* ``q`` nearest to another vertex ``v'``: ``||p - q|| >= ||p - v'|| - cost(q) >= E - cost(q)``, so
  ``f_p(q) >= g(E, T) = min over c in [0, T] of (w_mse/3)max(E - c, 0)^2 + w_mean*c``;
* ``q`` nearest to ``v``: for ``T <= exact_radius`` the candidates are enumerated (fact 2: the
  offsets ``x >= 0`` from ``v`` with ``|x| <= T``, mirrored into ``p``'s octant); above it the
  relaxation ``g(D, T)`` is used (there the lattice is fine enough not to matter);
* a pixel with ``D <= pull = 3*w_mean/(2*w_mse)`` pays at least, and at ``v`` exactly,
  ``(w_mse/3)*D^2``.

For ``T <= exact_radius``, fact 3 bounds ``X``: pick for each output colour ``q`` one pixel that
takes it; these are distinct pixels, and each pays ``f_p(q) - G_p(T) >= eps(q) = min over the
image's colours p of f_p(q) - G_p(T)``, so ``X`` is at least the sum of the k smallest ``eps``
over the colours within ``T`` (it matters on near-white and few-colour images, where fewer than
k lattice colours are worth taking, and on small images). Above it ``X >= 0`` is used.

Fact 4 (k < 8): the bound ``||p - q|| >= ||p - v(q)|| - cost(q)`` holds toward ``q``'s own
nearest vertex ``v(q)``, whichever vertex is nearest to ``p``, and ``g`` grows with the distance; so
with ``S`` the set of the output's nearest vertices (at most k of them), every pixel pays at
least ``g(D_S, T)``, ``D_S`` its distance to the nearest vertex of ``S``. The least, over the sets
of k vertices, of ``w_max*T + mean g(D_S, T)`` minimised over ``T >= c_k`` (convex in ``T``:
``best_cap``) is a second bound. It ignores the lattice and first use, so the larger of the two
is taken; at k = 2 it is the tighter one on photographs (skimage coffee: direct at 1.21x it
against 1.69x the first), whose colours gather about several vertices.

Minimising over the admissible radii gives the bound. Each term is at least the any-k bound's
term at the same ``T`` (``g(D, T)``), so the result is never below it; it is also max'ed with
it. ``w_max*T + mean g(D, T)`` is convex in ``T``, which limits the exact (costlier) pass to the
radii where it is below the best value found. Sums are float64 over int64 counts (exact to
2**53 pixels).
"""

from __future__ import annotations

import itertools

import numpy as np
from threadpoolctl import threadpool_limits

from cq.histogram import ColorHistogram
from cq.lattice import HALF, VERTICES, kth_smallest_cost, kth_smallest_sq, octant
from cq.lattice import radii as lattice_radii
from cq.objective import DEFAULT_K, Weights, best_cap

__all__ = ["bounds", "kth_smallest_cost", "lower_bound"]

_CHUNK = 1 << 14  # pixels per block of the exact lattice pass


def _relaxed(dist: np.ndarray, cap: float, weights: Weights) -> np.ndarray:
    """``g(dist, cap)``: the least a pixel at ``dist`` from a vertex pays under ``cap`` with real colours."""
    r = np.clip(dist - weights.vertex_pull, 0.0, cap)
    return weights.pixel_mse * (dist - r) ** 2 + weights.mean_cost * r


def _folded(hist: ColorHistogram):
    """Offsets from the nearest vertex, sorted per colour (the cube's symmetries keep every term),
    merged into distinct rows: (offsets (m, 3) int64, counts (m,) float64, row of each colour)."""
    o = np.minimum(hist.colors, 255 - hist.colors.astype(np.int64)).astype(np.int64)
    o.sort(axis=1)
    keys = (o[:, 0] << 14) | (o[:, 1] << 7) | o[:, 2]  # 7 bits per offset
    uniq, inv = np.unique(keys, return_inverse=True)  # a sort of the colours, not a 2M-bin table
    counts = np.bincount(inv, weights=hist.counts.astype(np.float64), minlength=uniq.size)
    rows = np.stack([uniq >> 14, (uniq >> 7) & HALF, uniq & HALF], axis=1)
    return rows, counts, inv


def _pixel_terms(offsets: np.ndarray, radii: np.ndarray, weights: Weights) -> np.ndarray:
    """``G_p(T)`` (rows, len(radii)) of every folded row for every ``T`` in ``radii`` (<= the exact radius).

    A row within the pull pays ``(w_mse/3)*D^2`` (its vertex); a farther one its best uint8 colour
    at its own vertex within ``T`` (enumerated), or the relaxation ``g(E, T)`` toward its
    second-nearest vertex if that is lower.
    """
    d_sq = (offsets * offsets).sum(1)
    out = np.repeat((weights.pixel_mse * d_sq.astype(np.float64))[:, None], len(radii), axis=1)
    far = np.flatnonzero(np.sqrt(d_sq) > weights.vertex_pull)
    cand = octant(int(round(float(radii.max()) ** 2)))
    cand_sq = (cand * cand).sum(1)
    column = np.searchsorted(cand_sq, np.rint(radii**2).astype(np.int64), side="right") - 1
    bias = weights.pixel_mse * cand_sq + weights.mean_cost * np.sqrt(cand_sq)
    for s in range(0, len(far), _CHUNK):
        rows = far[s : s + _CHUNK]
        o = offsets[rows]
        e = np.sqrt(d_sq[rows] + 255 * (255 - 2 * o[:, 2]))
        values = weights.pixel_mse * (d_sq[rows, None] - 2.0 * (o @ cand.T)) + bias
        best = np.minimum.accumulate(values, axis=1)[:, column]
        other = np.stack([_relaxed(e, t, weights) for t in radii], axis=1)
        out[rows] = np.minimum(best, other)
    return out


_EXCESS_BUDGET = 3_000_000  # colours x candidates above which the first-use term (O(1/n_pixels)) is skipped


def _first_use_excess(colors: np.ndarray, terms: np.ndarray, radii: np.ndarray, k: int,
                      weights: Weights) -> np.ndarray:
    """For each ``T``: the least total excess over ``terms`` that k distinct used colours force.

    Each output colour ``q`` needs a pixel ``p`` of its own, which pays ``f_p(q) >= G_p(T)``; so the
    excess is at least the sum of the k smallest ``eps(q) = min_p f_p(q) - G_p(T)`` over the uint8
    colours within ``T``. For ``q`` at offset ``x`` (toward the cube) from vertex ``v``,
    ``||p - q|| = || |p - v| - x ||`` exactly; over a budget of colours x candidates, the pixels of
    other octants use the triangle bound ``||p - q|| >= ||p - v|| - |x|`` instead, and over a larger
    one the term is skipped (zero is always a valid excess).
    """
    cand = octant(int(round(float(radii.max()) ** 2)))
    if len(colors) * len(cand) > _EXCESS_BUDGET:
        return np.zeros(len(radii))
    exact_all = 8 * len(colors) * len(cand) <= _EXCESS_BUDGET
    cand_sq = (cand * cand).sum(1)
    cand_r = np.sqrt(cand_sq)
    c = colors.astype(np.int64)
    octant_of = (c > 127) @ np.array([4, 2, 1])
    eps = np.full((8, len(cand), len(radii)), np.inf)
    for v, vertex in enumerate(VERTICES):
        exact = np.ones(len(c), dtype=bool) if exact_all else octant_of == v
        rel = np.abs(c - vertex)
        if exact.any():
            o = rel[exact]
            f = weights.pixel_mse * ((o * o).sum(1)[:, None] - 2.0 * (o @ cand.T) + cand_sq)
            f += weights.mean_cost * cand_r
            for j in range(len(radii)):
                eps[v, :, j] = (f - terms[exact, j, None]).min(0)
        if not exact.all():
            dist = np.sqrt((rel[~exact] ** 2).sum(1).astype(np.float64))
            for rho in np.unique(cand_r):
                lower = (weights.pixel_mse * np.maximum(dist - rho, 0.0) ** 2 + weights.mean_cost * rho)[:, None]
                lower = (lower - terms[~exact]).min(0)
                eps[v, cand_r == rho] = np.minimum(eps[v, cand_r == rho], lower)
    out = np.empty(len(radii))
    for j, t in enumerate(radii):
        within = eps[:, cand_sq <= np.rint(t * t), j].reshape(-1)
        out[j] = np.partition(np.maximum(within, 0.0), k - 1)[:k].sum()
    return out


def _few_vertices(hist: ColorHistogram, k: int, weights: Weights, n: float) -> float:
    """Fact 4: for k < 8, the least over the sets ``S`` of k vertices of the relaxed bound with each
    colour's distance to the nearest vertex of ``S`` (exact integer squared distances, pooled by
    value, so a set costs one pass over the colours); -inf for k >= 8."""
    if k >= len(VERTICES) or weights.pixel_mse <= 0:
        return -np.inf
    c = hist.colors.astype(np.int64)
    to_vertex = np.stack([((c - v) ** 2).sum(1) for v in VERTICES], axis=1).astype(np.int32)  # <= 3 * 255**2
    counts = hist.counts.astype(np.float64)
    ck = kth_smallest_cost(k)
    best = np.inf
    for subset in itertools.combinations(range(len(VERTICES)), k):
        mass = np.bincount(to_vertex[:, subset].min(1), weights=counts)
        sq = np.flatnonzero(mass)
        dist, mass = np.sqrt(sq.astype(np.float64)), mass[sq]
        t = max(best_cap(dist, mass, weights, n), ck)
        best = min(best, weights.max_cost * t + float(mass @ _relaxed(dist, t, weights)) / n)
    return best


def _worth_a_pass(radii: np.ndarray, t_any: float, best: float, relaxed_total):
    """The radii whose relaxed total (a lower bound of their exact value) is below ``best``, with
    those totals, lowest first. The relaxed total is convex, so each side of ``t_any`` is walked
    outward until it reaches ``best``."""
    found = []
    for side in (radii[radii >= t_any], radii[radii < t_any][::-1]):
        for r in side:
            value = relaxed_total(r)
            if value >= best:
                break
            found.append((value, r))
    found.sort()
    return np.array([v for v, _ in found]), np.array([r for _, r in found])


def lower_bound(hist: ColorHistogram, k: int = DEFAULT_K, weights: Weights = Weights(), *,
                exact_radius: float = 8.0) -> float:
    """The least score any output with exactly ``k`` distinct uint8 colours can reach (see above).

    Parameters
    ----------
    hist : the image's colour histogram.
    k : the number of distinct output colours.
    exact_radius : caps up to this radius get the exact lattice pass; a larger value tightens the
        bound on images whose best cap is a little larger, at a cost linear in its cube.
    """
    return bounds(hist, k, weights, exact_radius=exact_radius)[0]


def bounds(hist: ColorHistogram, k: int = DEFAULT_K, weights: Weights = Weights(), *,
           exact_radius: float = 8.0) -> tuple[float, float]:
    """``(lower_bound, any-k bound)``: the any-k bound (``cq.objective.lower_bound_any_k``, up to float
    rounding) falls out of this computation, so a record takes both from one call."""
    with threadpool_limits(limits=1, user_api="blas"):  # products of inner size 3: threads only contend
        return _lower_bound(hist, k, weights, exact_radius)


def _lower_bound(hist: ColorHistogram, k: int, weights: Weights, exact_radius: float) -> tuple[float, float]:
    n = float(hist.counts.sum(dtype=np.float64))
    offsets, counts, row_of = _folded(hist)
    dist = np.sqrt((offsets * offsets).sum(1).astype(np.float64))

    def relaxed_totals(caps: np.ndarray) -> np.ndarray:
        terms = np.stack([counts @ _relaxed(dist, c, weights) for c in caps]) if len(caps) else np.zeros(0)
        return weights.max_cost * caps + terms / n

    # The any-k bound, on the folded rows (it depends on each colour's distance D only).
    t_any = best_cap(dist, counts, weights, n)
    any_k = float(relaxed_totals(np.array([t_any]))[0])
    # max_cost = sqrt(m), m an integer >= ck_sq; m <= exact_sq gets the exact pass, m > it the relaxation.
    ck_sq = kth_smallest_sq(k)
    exact_sq = int(np.floor(exact_radius**2 + 1e-9))
    m0 = max(ck_sq, exact_sq + 1)
    t_sq = max(t_any, np.sqrt(m0)) ** 2
    around = np.arange(np.floor(t_sq) - 1, np.ceil(t_sq) + 2)  # convex: the discrete minimum is next to t
    best = float(relaxed_totals(np.sqrt(np.maximum(around, m0))).min())
    radii = lattice_radii(np.sqrt(exact_sq))
    relaxed, radii = _worth_a_pass(radii[np.rint(radii**2) >= ck_sq], t_any, best,
                                   lambda r: float(relaxed_totals(np.array([r]))[0]))
    while radii.size and relaxed[0] < best:  # the relaxation bounds the exact value from below
        batch = radii[:4]
        terms = _pixel_terms(offsets, batch, weights)
        totals = counts @ terms + _first_use_excess(hist.colors, terms[row_of], batch, k, weights)
        best = min(best, float(np.min(weights.max_cost * batch + totals / n)))
        keep = relaxed[4:] < best
        radii, relaxed = radii[4:][keep], relaxed[4:][keep]
    return max(best, any_k, _few_vertices(hist, k, weights, n)), any_k
