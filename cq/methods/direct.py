"""Direct minimisation of the exact score over the palette, the assignment and the max-cost cap.

For a fixed assignment the best palette has a closed form (docs/objective.md): each colour is its
cluster's centroid moved toward the nearest cube vertex by ``weights.vertex_pull``, then pulled
in to radius ``T``; the best cap ``T`` is the root of a piecewise-linear derivative. For a fixed
palette the best assignment is ``argmin_c (w_mse/3)||p-c||^2 + w_mean*cost(c)``. Alternating the
two (a Lloyd iteration on the score itself, ``T`` included) never raises the score. It runs from
several starts (weighted greedy k-means++ on each colour's ideal target) on a 5-bit
binned histogram, then on the full histogram. The same iteration then runs on uint8
colours: each cluster picks a lattice point near its real optimum, under the one cap that suits
all clusters best (plain rounding toward a vertex would lose a capped colour's whole slope).
When that cap is small (dark images, graphics on white or black, near-white scans) the lattice
itself limits the palette: a k-median swap search over the uint8 colours within each small cap
competes, and a palette with unused colours is completed under its cap with the lattice colours
that the cheapest pixels can take (often at another vertex), rather than by raising the max cost.
An image of at most k colours gives each colour its own ideal output; the shared finalisation
then splits pixels to reach k. Otherwise the result has exactly ``k`` distinct, used colours.
"""

from __future__ import annotations

import functools
import time
import numpy as np
from threadpoolctl import threadpool_limits

from cq import lattice
from cq.finalize import finalize
from cq.histogram import pack_rgb
from cq.methods import Problem, Proposal, register
from cq.methods._points import (Points, assign, binned_points, cluster_moments, exact_points, fine_points,
                                points_score)
from cq.objective import Weights, best_cap, ideal_colors, vertex_cost


def _bound_cap(points: Points, weights: Weights) -> float:
    """The cap ``T`` at which the lower bound of these points is reached (each point its own cluster)."""
    return best_cap(vertex_cost(points.colors), points.weights, weights, points.n_pixels)


def _place(centroids: np.ndarray, cap: float, weights: Weights) -> np.ndarray:
    """Best colour of each cluster from its centroid: moved toward its vertex by the pull, radius <= cap."""
    return ideal_colors(centroids, cap, weights)


def _lloyd(points: Points, palette: np.ndarray, weights: Weights, max_iter: int, tol: float = 1e-7):
    """Alternate assignment and (palette, cap) updates until the score stops falling.

    Returns the palette, labels and real-valued score (on these points) of the best iterate.
    Empty clusters are re-seeded at the points that lose most against their own ideal colour.
    """
    k = len(palette)
    n_pixels = points.n_pixels
    prev = np.inf
    best = (np.inf, palette, None)
    for _ in range(max_iter):
        labels, cost = assign(points, palette, weights)
        score = points_score(points, cost, palette, labels, weights)
        if score < best[0]:
            best = (score, palette, labels)
        if score > prev * (1 - tol):
            break
        prev = score
        mass, centroids = cluster_moments(points, labels, k)
        cap = best_cap(vertex_cost(centroids[mass > 0]), mass[mass > 0], weights, n_pixels)
        palette = _place(centroids, cap, weights)
        empty = np.flatnonzero(mass == 0)
        if empty.size:
            palette[empty] = _reseed(points, cost, cap, weights, empty.size)
    return best[1], best[2], best[0]


def _reseed(points: Points, cost: np.ndarray, cap: float, weights: Weights, count: int) -> np.ndarray:
    """Ideal colours of the ``count`` points whose current cost exceeds their own optimum most
    (cycling through them when there are fewer points than ``count``: finalisation merges)."""
    ideal = ideal_colors(points.colors, cap, weights)
    own = weights.pixel_mse * ((points.colors - ideal) ** 2).sum(1) + weights.mean_cost * vertex_cost(ideal)
    worst = np.resize(np.argsort(-(cost - own) * points.weights), count)
    return ideal[worst]


_WINDOW = np.stack(np.meshgrid(*[np.arange(-1, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _lattice_place(mass: np.ndarray, centroids: np.ndarray, cap: float, weights: Weights,
                   n_pixels: float) -> np.ndarray:
    """Best distinct uint8 colour of every cluster under the best common cap, for a fixed assignment.

    Each cluster picks from the 4x4x4 lattice points around its real optimum; a cap ``T`` (one of
    the candidates' costs) limits every pick to cost <= T, and the ``T`` minimising
    ``w_max*T + sum of cluster terms`` wins. Rounding a capped colour toward its vertex would cost
    it the whole slope of the cap, which this avoids.
    """
    anchor = np.floor(_place(centroids, cap, weights)).astype(np.int64)
    cand = np.clip(anchor[:, None, :] + _WINDOW[None], 0, 255)  # (k, 64, 3)
    cand_cost = vertex_cost(cand)
    diff = cand - centroids[:, None, :]
    value = (weights.pixel_mse * np.einsum("kcj,kcj->kc", diff, diff) + weights.mean_cost * cand_cost)
    value *= (mass / n_pixels)[:, None]
    caps = np.unique(cand_cost)
    caps = caps[caps >= cand_cost.min(1).max()]
    allowed = cand_cost[None] <= caps[:, None, None] + 1e-9  # (caps, k, 64)
    totals = np.where(allowed, value[None], np.inf).min(2).sum(1) + weights.max_cost * caps
    allowed = allowed[int(np.argmin(totals))]
    order = np.argsort(np.where(allowed, value, np.inf), axis=1, kind="stable")
    return _distinct_picks(cand, order, mass)


def _distinct_picks(cand: np.ndarray, order: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """Each cluster's best-ranked candidate, heavier clusters first, skipping colours already taken."""
    picks = cand[np.arange(len(cand)), order[:, 0]]
    keys = pack_rgb(picks)
    if len(np.unique(keys)) == len(keys):
        return picks.astype(np.uint8)
    taken: set[int] = set()
    for j in np.argsort(-mass, kind="stable"):
        for c in order[j]:
            key = int(pack_rgb(cand[j, c]))
            if key not in taken:
                taken.add(key)
                picks[j] = cand[j, c]
                break
    return picks.astype(np.uint8)


def _integer_lloyd(points: Points, palette: np.ndarray, weights: Weights, max_iter: int, tol: float = 1e-9):
    """Lloyd iterations whose palette update picks uint8 colours (:func:`_lattice_place`).

    Starts from a real palette; returns the best uint8 palette, its labels and its exact score
    on these points.
    """
    k = len(palette)
    n_pixels = points.n_pixels
    labels, cost = assign(points, palette, weights)
    best = (np.inf, None, None)
    for _ in range(max(max_iter, 1)):
        mass, centroids = cluster_moments(points, labels, k)
        cap = best_cap(vertex_cost(centroids[mass > 0]), mass[mass > 0], weights, n_pixels)
        empty = np.flatnonzero(mass == 0)
        if empty.size:
            centroids[empty] = _reseed(points, cost, cap, weights, empty.size)
            mass[empty] = 1e-9
        pal8 = _lattice_place(mass, centroids, cap, weights, n_pixels)
        labels, cost = assign(points, pal8.astype(np.float64), weights)
        score = points_score(points, cost, pal8, labels, weights)
        if score > best[0] * (1 - tol):
            break
        best = (score, pal8, labels)
    return best[1], best[2], best[0]


def _kmedian(points: Points, cand: np.ndarray, k: int, weights: Weights) -> np.ndarray:
    """Choose ``k`` of the candidate colours minimising the pixel terms: greedy, then best swaps.

    Exact k-median local search on the (points x candidates) objective matrix; used when the cap
    is so small that the lattice, not the geometry, limits the palette.
    """
    value = weights.pixel_mse * ((points.colors[:, None, :] - cand[None]) ** 2).sum(2)
    value += weights.mean_cost * vertex_cost(cand)
    w = points.weights
    chosen: list[int] = []
    current = np.full(len(w), np.inf)
    for _ in range(k):
        totals = w @ np.minimum(current[:, None], value)
        totals[chosen] = np.inf
        chosen.append(int(np.argmin(totals)))
        current = np.minimum(current, value[:, chosen[-1]])
    chosen_arr = np.array(chosen)
    improved = True
    while improved:
        improved = False
        for j in range(k):
            sub = value[:, chosen_arr]
            two = np.argpartition(sub, 1, axis=1)[:, :2]
            first = np.take_along_axis(sub, two, 1)
            lo, hi = first.min(1), first.max(1)
            label = np.where(first[:, 0] <= first[:, 1], two[:, 0], two[:, 1])
            base = float(w @ lo)
            without = np.where(label == j, hi, lo)
            totals = w @ np.minimum(without[:, None], value)
            totals[chosen_arr] = np.inf
            a = int(np.argmin(totals))
            if totals[a] < base * (1 - 1e-9):
                chosen_arr[j] = a
                improved = True
    return cand[chosen_arr].astype(np.uint8)


def _lattice_search(coarse: Points, hist, full: Points, k: int, weights: Weights, limit: float):
    """Best k-median palette over the lattice colours within each cap, from the smallest feasible
    cap up to ``limit``.

    The k-median runs on ``coarse``; each palette is judged by its exact score after the shared
    finalisation on the full histogram (:func:`exact_result`), which splits pixels where that is
    cheaper than moving whole colours. Returns (score, palette, labels on ``full``), or
    (inf, None, None) when no cap up to ``limit`` has k colours.
    """
    best, worse = (np.inf, None, None), 0
    for cap in lattice.radii(limit):
        if cap < lattice.kth_smallest_cost(k) - 1e-9:
            continue
        result = exact_result(hist, full, _kmedian(coarse, lattice.colors_within(cap), k, weights), k, weights)
        worse = worse + 1 if result[0] > best[0] else 0
        best = min(best, result, key=lambda r: r[0])
        if worse == _PATIENCE:
            break
    return best


_PATIENCE = 2  # caps in a row with a worse score (not merely equal) that end the search


def exact_result(hist, full: Points, pal8: np.ndarray, k: int, weights: Weights):
    """(exact score after finalisation, palette, labels) of a uint8 palette, cost-aware assignment.

    The palette and labels are what a method proposes: the shared finalisation turns them into
    the scored result again (it is deterministic), so stages compare on what would be written.
    """
    labels, _ = assign(full, pal8.astype(np.float64), weights)
    q = finalize(hist, pal8, labels, k=k, weights=weights)
    return q.score(hist, weights).score, pal8, labels


def kmeans_plusplus(x: np.ndarray, k: int, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Weighted greedy k-means++ seeds (k, 3): each new seed is the best of ``2 + log k`` draws
    proportional to weight times squared distance to the nearest seed so far (scikit-learn's rule,
    without importing scikit-learn: that import alone cost more than a photo's whole run).
    With fewer points than ``k``, seeds repeat (finalisation separates them)."""
    n_trials = 2 + int(np.log(k))
    p = weights / weights.sum()
    seeds = [int(rng.choice(len(x), p=p))]
    closest = ((x - x[seeds[0]]) ** 2).sum(1)
    for _ in range(1, min(k, len(x))):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0:
            break
        draws = np.searchsorted(cumulative, rng.random(n_trials) * cumulative[-1], side="right")
        draws = np.minimum(draws, len(x) - 1)
        reach = np.minimum(closest[None], ((x[None] - x[draws][:, None]) ** 2).sum(2))
        best = int(np.argmin(reach @ weights))
        seeds.append(int(draws[best]))
        closest = reach[best]
    return x[np.resize(np.array(seeds), k)]


def _best_start(points: Points, k: int, weights: Weights, rng: np.random.Generator, n_starts: int,
                max_iter: int, deadline: float) -> np.ndarray:
    """Best real palette of ``n_starts`` Lloyd runs, each seeded by k-means++ on the ideal colours
    under the lower bound's cap; no new start begins after ``deadline`` (perf_counter seconds)."""
    targets = ideal_colors(points.colors, _bound_cap(points, weights), weights)
    best = (np.inf, None)
    for start in range(n_starts):
        if start > 0 and time.perf_counter() > deadline:
            break
        seeds = kmeans_plusplus(targets, k, points.weights, rng)
        palette, _, score = _lloyd(points, seeds, weights, max_iter)
        if score < best[0]:
            best = (score, palette)
    return best[1]


def _one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread: its products have inner size 3, where threads only contend
    (on a busy 2-core machine they made it several times slower)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def _descent(hist, k, weights, *, seed, n_starts, coarse_bits, coarse_iter, fine_iter, int_iter,
             fine_max_colors, deadline):
    """The descent's uint8 palette for an image of > k colours, and the binned points it started on."""
    coarse = binned_points(hist, coarse_bits, k)
    palette = _best_start(coarse, k, weights, np.random.default_rng(seed), n_starts, coarse_iter, deadline)
    fine = fine_points(hist, k, fine_max_colors)
    palette, _, _ = _lloyd(fine, palette, weights, fine_iter)
    return _integer_lloyd(fine, palette, weights, int_iter)[0], coarse


@register("direct", version="3", seed=0, n_starts=4, coarse_bits=5, coarse_iter=60, fine_iter=20, int_iter=10,
          fine_max_colors=400_000, lattice_cap=4.0, time_budget=None)
@_one_blas_thread
def direct(problem: Problem, *, seed: int = 0, n_starts: int = 4, coarse_bits: int = 5, coarse_iter: int = 60,
           fine_iter: int = 20, int_iter: int = 10, fine_max_colors: int = 400_000, lattice_cap: float = 4.0,
           time_budget: float | None = None) -> Proposal:
    """Lloyd-style descent on the exact score, then on uint8 colours; see the module docstring.

    Parameters
    ----------
    seed : seeds the k-means++ starts; the result is deterministic for a given seed.
    n_starts : starts on the binned histogram; the best continues on the fine one.
    coarse_bits : bits per channel of the binned histogram used for the starts.
    coarse_iter, fine_iter, int_iter : iteration limits of the starts, of the real-valued descent
        on the fine histogram and of the uint8 descent.
    fine_max_colors : histograms with more colours are binned (7, then 6 bits) for the fine
        stages; the final assignment is always on the exact histogram.
    lattice_cap : when the best max cost found is below this, palettes made of the uint8 colours
        within each cap up to it are searched too (k-median), since there the lattice decides.
    time_budget : seconds after which no further start begins (None: all starts run).
    """
    t0 = time.perf_counter()
    hist, k, weights = problem.hist, problem.k, problem.weights
    deadline = t0 + time_budget if time_budget is not None else np.inf
    full = exact_points(hist)
    if hist.n_colors <= k:  # every colour its own cluster; finalisation adds the missing colours
        ideal = ideal_colors(full.colors, _bound_cap(full, weights), weights)
        pal8, coarse, stage = _integer_lloyd(full, ideal, weights, int_iter)[0], full, "own colours"
    else:
        pal8, coarse = _descent(hist, k, weights, seed=seed, n_starts=n_starts, coarse_bits=coarse_bits,
                                coarse_iter=coarse_iter, fine_iter=fine_iter, int_iter=int_iter,
                                fine_max_colors=fine_max_colors, deadline=deadline)
        stage = "lloyd"
    # Every stage is judged on one footing, its exact score after finalisation: none returns
    # worse than another one computed.
    results = {stage: exact_result(hist, full, pal8, k, weights)}
    if float(vertex_cost(pal8).max()) < lattice_cap:
        results["lattice"] = _lattice_search(coarse, hist, full, k, weights, lattice_cap)
    stage = min(results, key=lambda name: results[name][0])
    _, pal8, labels = results[stage]
    order = np.argsort(pack_rgb(pal8))  # finalize's order, so that it returns these arrays unchanged
    pal8, labels = pal8[order], np.argsort(order)[labels]
    return Proposal(pal8, labels, rule="objective", extras={
        "stage": stage, "max_cost": float(vertex_cost(pal8).max()), "seconds": time.perf_counter() - t0})
