"""From a trained real palette to an exact result: the cnn's side of the exact score.

The exact score of a rounded palette after the descent's reseed of unused colours and the one
finalisation (cached: late epochs repeat one), and the uint8 finish with direct's integer-aware
descent.
"""

from __future__ import annotations

import numpy as np

from cq.descent import integer_lloyd, lattice_search, own_colours, reseed_unused
from cq.finalize import finalize
from cq.objective import Weights, vertex_cost
from cq.points import Points, fine_points


def exact_score(im, pal: np.ndarray, weights: Weights):
    """A uint8 palette finalised to exactly ``k`` colours (cost-aware assignment), and its exact score;
    ``im`` is the cnn's per-image state (its problem and cache).

    ``im.cache`` maps uint8 palettes to their result: late epochs often repeat one.
    """
    problem, cache = im.problem, im.cache
    key = pal.tobytes()
    if key not in cache:
        pal, labels = reseed_unused(im.exact_points, pal, weights)
        quant = finalize(problem.hist, pal, labels, k=problem.k, weights=weights)
        cache[key] = quant, quant.score(problem.hist, weights).score
    return cache[key]


def finish(im, weights: Weights, steps: int, lattice_cap: float):
    """The best epoch's palette placed on the uint8 lattice, kept only if it beats plain rounding.

    ``steps`` of the integer-aware descent shared with ``direct`` (each cluster's best lattice
    point under the best common cap). Where the max cost is below ``lattice_cap`` (very dark or
    flat images, whose optimum is 37 distinct lattice points next to the vertices), rounding, not
    the palette's geometry, decides: direct's k-median search over those lattice points is tried
    too. An image of at most k colours also tries direct's own start (each colour at its own
    best output) and each colour unmoved: the descent cannot place a network palette of more
    colours than the image has (text at k = 256 ended 2.4x the bound without them). Returns
    (quantization, exact score, which finish won).
    """

    exact, _, quant, palette = im.best
    best = (quant, exact, "rounded")
    if not steps:
        return best
    hist, k = im.problem.hist, im.problem.k
    points = Points(im.points, im.mass)
    candidates = []
    if hist.n_colors <= k:  # as direct: each colour at its own best output, or unmoved
        candidates += [(own_colours(im.exact_points, weights, steps), "own colours"), (hist.colors, "unmoved")]
    if len(im.points) >= k:  # direct's descent needs at least k points to reseed
        candidates.append((integer_lloyd(points, palette, weights, steps)[0], "lattice placement"))
    if any(vertex_cost(p).max() < lattice_cap for p in [quant.palette, *(c for c, _ in candidates)]):
        fine = fine_points(hist, k, 400_000)
        candidates.append((lattice_search(points, hist, fine, k, weights, lattice_cap)[1], "lattice search"))
    for pal, name in candidates:
        if pal is not None:
            finished, score = exact_score(im, pal, weights)
            if score < best[1]:
                best = (finished, score, name)
    return best
