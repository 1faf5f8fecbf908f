"""The descent on the exact score that ``direct`` runs and ``cnn``'s finish shares.

For a fixed assignment the best palette has a closed form (docs/objective.md): each colour is its
cluster's centroid moved toward the nearest cube vertex by ``weights.vertex_pull``, then pulled in
to radius ``T``; the best cap ``T`` is the root of a piecewise-linear derivative. For a fixed
palette the best assignment is ``argmin_c (w_mse/3)||p-c||^2 + w_mean*cost(c)``. Alternating the
two (:func:`lloyd`) never raises the score. :func:`integer_lloyd` runs the same iteration on uint8
colours (each cluster picks a lattice point near its real optimum under the one cap that suits all
clusters best). Under small caps the lattice itself limits the palette: :func:`lattice_search`
is a k-median search over the uint8 colours within each cap. Every candidate palette is judged by
:func:`exact_result`, its exact score after the shared finalisation, so stages compare on one
footing. :func:`kmeans_plusplus` seeds the starts.
"""

from __future__ import annotations

import numpy as np

from cq import lattice
from cq.finalize import finalize
from cq.histogram import pack_rgb
from cq.objective import Weights, best_cap, ideal_colors, vertex_cost
from cq.points import Points, assign, assign_colors, cluster_moments, point_costs, points_score


def _place(centroids: np.ndarray, cap: float, weights: Weights) -> np.ndarray:
    """Best colour of each cluster from its centroid: moved toward its vertex by the pull, radius <= cap."""
    return ideal_colors(centroids, cap, weights)


def lloyd(points: Points, palette: np.ndarray, weights: Weights, max_iter: int, tol: float = 1e-7):
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
    worst = np.resize(np.argsort(-_loss(points, cost, ideal, weights)), count)
    return ideal[worst]


def _loss(points: Points, cost: np.ndarray, ideal: np.ndarray, weights: Weights) -> np.ndarray:
    """What each point's pixels lose against taking their own ``ideal`` colour, in total."""
    own = weights.pixel_mse * ((points.colors - ideal) ** 2).sum(1) + weights.mean_cost * vertex_cost(ideal)
    return (cost - own) * points.weights


def round_within(palette: np.ndarray, cap: float) -> np.ndarray:
    """uint8 colours: nearest, except that a colour which rounding would push past the cap is
    rounded toward its vertex (never farther from it), so the max cost stays within the cap."""
    near = np.clip(np.rint(palette), 0, 255)
    vertex = palette > 127.5
    inward = np.where(vertex, np.ceil(palette), np.floor(palette)).clip(0, 255)
    over = vertex_cost(near) > max(cap, float(vertex_cost(palette).max(initial=0.0))) + 1e-9
    return np.where(over[:, None], inward, near).astype(np.uint8)


def reseed_unused(points: Points, palette: np.ndarray, weights: Weights) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 palette with every unused or repeated colour moved to a new place, where the
    image loses most: :func:`lloyd`'s reseed on the lattice.

    A new colour is a point's own ideal colour under the palette's max cost, rounded within it,
    taken from the points that lose most against it, distinct from every colour kept. All in one
    vectorised pass, so that finalisation (the one fill-to-k) seldom adds colours one at a time:
    its careful search is slow on palettes with many unused colours. Returns the palette and
    the points' labels.
    """
    labels = assign_colors(points.colors32, palette, weights)  # the costs only when a colour moves
    k = len(palette)
    keys = pack_rgb(palette)
    dead = np.bincount(labels, minlength=k) == 0
    dead[np.setdiff1d(np.arange(k), np.unique(keys, return_index=True)[1])] = True
    if not dead.any() or dead.all():
        return palette, labels
    cap = float(vertex_cost(palette[~dead]).max())
    ideal = round_within(ideal_colors(points.colors, cap, weights), cap)
    cost = point_costs(points, palette, labels, weights)
    order = np.argsort(-_loss(points, cost, ideal, weights), kind="stable")[: 64 * k]
    candidates = pack_rgb(ideal[order])
    first = np.sort(np.unique(candidates, return_index=True)[1])
    fresh = first[~np.isin(candidates[first], keys[~dead])][: int(dead.sum())]
    out = palette.copy()
    out[np.flatnonzero(dead)[: len(fresh)]] = ideal[order[fresh]]
    return out, assign_colors(points.colors32, out, weights)


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


def integer_lloyd(points: Points, palette: np.ndarray, weights: Weights, max_iter: int, tol: float = 1e-9):
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


def bound_cap(points: Points, weights: Weights) -> float:
    """The cap ``T`` at which the lower bound of these points is reached (each point its own cluster)."""
    return best_cap(vertex_cost(points.colors), points.weights, weights, points.n_pixels)


def own_colours(full: Points, weights: Weights, max_iter: int) -> np.ndarray:
    """For an image of at most k colours: each colour at its own best output under the lower
    bound's cap (moved toward its vertex), then :func:`integer_lloyd` on the lattice. ``direct``
    starts there; ``cnn``'s finish tries it beside its network's palette."""
    return integer_lloyd(full, ideal_colors(full.colors, bound_cap(full, weights), weights), weights, max_iter)[0]


def kmedian(points: Points, cand: np.ndarray, k: int, weights: Weights) -> np.ndarray:
    """Choose ``k`` of the candidate colours minimising the pixel terms: greedy, then best swaps.

    Exact k-median local search on the (points x candidates) objective matrix; used when the cap
    is so small that the lattice, not the geometry, limits the palette.
    """
    value = weights.pixel_mse * ((points.colors[:, None, :] - cand[None]) ** 2).sum(2)
    value += weights.mean_cost * vertex_cost(cand)
    chosen = _swap_until_stable(value, points.weights, _greedy(value, points.weights, k))
    return cand[chosen].astype(np.uint8)


def _greedy(value: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``k`` columns of ``value``, each the one that lowers ``w @ (row minimum over the chosen)``
    most. Every column's total is updated from the rows whose minimum the last choice lowered
    only (after the first few choices, few rows: k = 256 took 256 full passes before)."""
    current = np.full(len(w), np.inf)
    totals = w @ value
    chosen: list[int] = []
    for _ in range(k):
        totals[chosen] = np.inf
        chosen.append(_first_least(totals))
        lowered = np.flatnonzero(value[:, chosen[-1]] < current)
        rows, old = value[lowered], current[lowered, None]
        new = value[lowered, chosen[-1], None]
        totals -= w[lowered] @ (np.minimum(old, rows) - np.minimum(new, rows))
        current[lowered] = new[:, 0]
    return np.array(chosen)


def _swap_until_stable(value: np.ndarray, w: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Replace each chosen column in turn by the column that lowers the total most, until no
    single swap helps.

    Dropping chosen column ``j`` and adding ``a`` gives the total ``shared[a] + extra_j[a]``:
    ``shared[a] = w @ min(lo, value[:, a])`` (every row keeps its best chosen value) and
    ``extra_j`` corrects only the rows whose best was ``j`` (they fall back to their second
    best), so a pass costs one scan of the matrix, not one per chosen column.
    """
    chosen = chosen.copy()
    lo, hi, label = _two_nearest(value[:, chosen])
    shared, base = w @ np.minimum(lo[:, None], value), float(w @ lo)
    improved = True
    while improved:
        improved = False
        for j in range(len(chosen)):
            rows = np.flatnonzero(label == j)
            sub = value[rows]
            totals = shared + w[rows] @ (np.minimum(hi[rows, None], sub) - np.minimum(lo[rows, None], sub))
            totals[chosen] = np.inf
            a = _first_least(totals)
            if totals[a] < base * (1 - 1e-9):
                chosen[j] = a
                improved = True
                lo, hi, label = _two_nearest(value[:, chosen])  # only a swap changes them
                shared, base = w @ np.minimum(lo[:, None], value), float(w @ lo)
    return chosen


def _first_least(totals: np.ndarray) -> int:
    """Index of the least total, the first of those equal to it up to rounding: totals updated
    step by step differ in the last bits where totals recomputed whole tie exactly (candidates
    no pixel prefers), and a tie should go to the first, as ``argmin`` of exact totals does."""
    least = totals.min()
    return int(np.flatnonzero(totals <= least + 1e-10 * abs(least))[0])


def _two_nearest(sub: np.ndarray):
    """Per row of ``sub`` (points x chosen colours): the smallest value, the second smallest,
    and the column of the smallest (the second is inf with one column: k = 1)."""
    if sub.shape[1] == 1:
        return sub[:, 0], np.full(len(sub), np.inf), np.zeros(len(sub), dtype=np.int64)
    two = np.argpartition(sub, 1, axis=1)[:, :2]
    first = np.take_along_axis(sub, two, 1)
    label = np.where(first[:, 0] <= first[:, 1], two[:, 0], two[:, 1])
    return first.min(1), first.max(1), label


def lattice_search(coarse: Points, hist, full: Points, k: int, weights: Weights, limit: float):
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
        result = exact_result(hist, full, kmedian(coarse, lattice.colors_within(cap), k, weights), k, weights)
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
    norms = (x * x).sum(1)
    seeds = [int(rng.choice(len(x), p=p))]
    closest = _squared_distances(x, norms, x[seeds])[:, 0]
    for _ in range(1, min(k, len(x))):
        cumulative = np.cumsum(weights * closest)
        if cumulative[-1] <= 0:
            break
        draws = np.searchsorted(cumulative, rng.random(n_trials) * cumulative[-1], side="right")
        draws = np.minimum(draws, len(x) - 1)
        reach = np.minimum(closest[:, None], _squared_distances(x, norms, x[draws]))
        best = int(np.argmin(weights @ reach))
        seeds.append(int(draws[best]))
        closest = reach[:, best]
    return x[np.resize(np.array(seeds), k)]


def _squared_distances(x: np.ndarray, norms: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, m) squared distances of the rows of ``x`` (squared norms ``norms``) to those of ``y``,
    by one product (an (n, m, 3) difference array took most of the seeding's time)."""
    d2 = norms[:, None] - 2.0 * (x @ y.T) + (y * y).sum(1)[None]
    return np.maximum(d2, 0.0, out=d2)
