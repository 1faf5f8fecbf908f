"""From a trained real palette to an exact result: the cnn's side of the exact score.

Rounding to uint8 within the max-cost cap, refilling unused colours where the image loses most
(so that ``finalize`` seldom adds colours one at a time), the exact score of a finalised palette
(cached: late epochs repeat one), and the uint8 finish with direct's integer-aware descent.
"""

from __future__ import annotations

import numpy as np

from cq.descent import integer_lloyd, lattice_search
from cq.finalize import finalize
from cq.histogram import pack_rgb
from cq.objective import Weights, ideal_colors, vertex_cost
from cq.points import Points, assign_colors, fine_points


def round_within(palette: np.ndarray, cap: float) -> np.ndarray:
    """uint8 colours: nearest, except that a colour which rounding would push past the cap is
    rounded toward its vertex (never farther from it), so the max cost stays within the cap."""
    near = np.clip(np.rint(palette), 0, 255)
    vertex = palette > 127.5
    inward = np.where(vertex, np.ceil(palette), np.floor(palette)).clip(0, 255)
    over = vertex_cost(near) > max(cap, float(vertex_cost(palette).max(initial=0.0))) + 1e-9
    return np.where(over[:, None], inward, near).astype(np.uint8)


def exact_score(im, pal: np.ndarray, weights: Weights):
    """A uint8 palette finalised to exactly ``k`` colours (cost-aware assignment), and its exact score;
    ``im`` is the cnn's per-image state (its problem and cache).

    ``im.cache`` maps uint8 palettes to their result: late epochs often repeat one.
    """
    problem, cache = im.problem, im.cache
    key = pal.tobytes()
    if key not in cache:
        pal, labels = _fill(problem.hist, pal, weights)
        quant = finalize(problem.hist, pal, labels, k=problem.k, weights=weights, rule="objective")
        cache[key] = quant, quant.score(problem.hist, weights).score
    return cache[key]


def finish(im, weights: Weights, steps: int, lattice_cap: float):
    """The best epoch's palette placed on the uint8 lattice, kept only if it beats plain rounding.

    ``steps`` of the integer-aware descent shared with ``direct`` (each cluster's best lattice
    point under the best common cap). Where the max cost is below ``lattice_cap`` (very dark or
    flat images, whose optimum is 37 distinct lattice points next to the vertices), rounding, not
    the palette's geometry, decides: direct's k-median search over those lattice points is tried
    too. Returns (quantization, exact score, which finish won).
    """

    exact, _, quant, palette = im.best
    best = (quant, exact, "rounded")
    if not steps or len(im.points) < im.problem.k:  # direct's descent needs at least k points to reseed
        return best
    points = Points(im.points, im.mass)
    pal = integer_lloyd(points, palette, weights, steps)[0]
    candidates = [(pal, "lattice placement")]
    low = [vertex_cost(p).max() < lattice_cap for p in (quant.palette, pal) if p is not None]
    if any(low):
        full = fine_points(im.problem.hist, im.problem.k, 400_000)
        search = lattice_search(points, im.problem.hist, full, im.problem.k, weights, lattice_cap)[1]
        candidates.append((search, "lattice search"))
    for pal, name in candidates:
        if pal is not None:
            finished, score = exact_score(im, pal, weights)
            if score < best[1]:
                best = (finished, score, name)
    return best


def _fill(hist, pal: np.ndarray, weights: Weights):
    """Give every unused or repeated palette colour a new place, where the image loses most.

    A new colour is a histogram colour's own ideal output under the palette's max cost, taken
    from the colours that pay most over their ideal, heaviest first. All in one vectorised pass,
    so that ``finalize`` seldom has to add colours one at a time (its careful search took most
    of an exact score's time on palettes with unused colours). Returns the palette and labels.
    """
    labels = assign_colors(hist.colors, pal, weights)
    k = len(pal)
    keys = pack_rgb(pal)
    dead = np.bincount(labels, minlength=k) == 0
    dead[np.setdiff1d(np.arange(k), np.unique(keys, return_index=True)[1])] = True
    if not dead.any() or dead.all():
        return pal, labels
    cap = float(vertex_cost(pal[~dead]).max())
    colors = hist.colors.astype(np.float64)
    ideal = round_within(ideal_colors(colors, cap, weights), cap)
    taken = pal[labels]
    own = weights.pixel_mse * ((colors - taken) ** 2).sum(1) + weights.mean_cost * vertex_cost(taken)
    best = weights.pixel_mse * ((colors - ideal) ** 2).sum(1) + weights.mean_cost * vertex_cost(ideal)
    order = np.argsort(-(own - best) * hist.counts, kind="stable")
    candidates = pack_rgb(ideal[order[: 64 * k]])
    _, first = np.unique(candidates, return_index=True)
    fresh = np.sort(first)[~np.isin(candidates[np.sort(first)], keys[~dead])][: int(dead.sum())]
    pal = pal.copy()
    pal[np.flatnonzero(dead)[: len(fresh)]] = ideal[order[fresh]]
    return pal, assign_colors(hist.colors, pal, weights)
