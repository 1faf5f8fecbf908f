"""Flat blocks: is direct's gap to the k-aware bound the result's or the bound's? (issue 17, item 6)

    python bench/flat_blocks.py [--seeds 6] [--colours 9] [--k 3]

1. Exactly, on small cases (``--colours`` flat colours of random areas, k = ``--k``): every
   partition of the colours into k groups is tried, each with its best real-valued palette and
   max-cost cap (closed form, docs/objective.md: the group's scatter plus its centroid moved
   toward its vertex under the one best cap). The least of them, R, is at most the true optimum
   (a uint8 palette can do no better, and with more colours than k no pixel gains by a split),
   so R / bound > 1 is looseness of the bound, proven; direct / R is all the optimiser can lose.
2. bench/graphics.py's blocks_300 (and blocks_100) at several k: direct / bound, and with 8x the
   starts and 3-4x every iteration count at k = 37.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1]),
                str(Path(__file__).resolve().parents[1] / "tests")]

from _graphics_set import blocks  # noqa: E402
from effort import MORE  # noqa: E402
from test_never_beaten import oracle_score, quantized  # noqa: E402

from cq.bound import lower_bound  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402
from cq.objective import Weights, best_cap, vertex_cost  # noqa: E402


def partitions(n: int, k: int) -> np.ndarray:
    """Every partition of n items into exactly k groups, as (P, n) labels (restricted growth strings)."""
    out: list[list[int]] = []

    def grow(labels: list[int], used: int) -> None:
        if len(labels) == n:
            if used == k:
                out.append(labels.copy())
            return
        for g in range(min(used + 1, k)):
            if n - len(labels) - 1 >= k - max(used, g + 1):  # enough items left to open the rest
                labels.append(g)
                grow(labels, max(used, g + 1))
                labels.pop()

    grow([], 0)
    return np.array(out)


def relaxed_optimum(colors: np.ndarray, counts: np.ndarray, k: int, weights: Weights) -> float:
    """The least score over every partition into k groups with real-valued colours (see above)."""
    x, w, n = colors.astype(np.float64), counts.astype(np.float64), float(counts.sum())
    best = np.inf
    for labels in partitions(len(x), k):
        mass = np.bincount(labels, weights=w, minlength=k)
        centroid = np.stack([np.bincount(labels, weights=w * x[:, c], minlength=k) for c in range(3)], 1) / mass[:, None]
        scatter = float(w @ ((x - centroid[labels]) ** 2).sum(1))
        dist = vertex_cost(centroid)
        cap = best_cap(dist, mass, weights, n)
        r = np.clip(dist - weights.vertex_pull, 0.0, cap)
        groups = weights.pixel_mse * (dist - r) ** 2 + weights.mean_cost * r
        best = min(best, weights.max_cost * cap + (weights.pixel_mse * scatter + mass @ groups) / n)
    return best


def small_case(seed: int, n_colours: int) -> np.ndarray:
    """``n_colours`` random flat colours on blocks of random areas, as a one-row image."""
    rng = np.random.default_rng(seed)
    colours = np.unique(rng.integers(0, 256, (2 * n_colours, 3)), axis=0)[:n_colours]
    areas = rng.integers(1, 40, n_colours)
    return np.repeat(colours, areas, axis=0)[None].astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--colours", type=int, default=9)
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()
    weights = Weights()
    print(f"1. exact, {args.colours} flat colours, k = {args.k}: every partition tried")
    print(f"{'seed':>4s} {'R / bound':>10s} {'direct / R':>11s} {'direct / bound':>15s}")
    for seed in range(args.seeds):
        image = small_case(seed, args.colours)
        hist = ColorHistogram.from_image(image)
        bound = lower_bound(hist, args.k, weights)
        relaxed = relaxed_optimum(hist.colors, hist.counts, args.k, weights)
        direct = oracle_score(image, quantized("direct", image, args.k))
        print(f"{seed:4d} {relaxed / bound:10.4f} {direct / relaxed:11.4f} {direct / bound:15.4f}", flush=True)
    print("\n2. direct / bound on bench/graphics.py's flat blocks (640 x 400, its size)")
    print(f"{'image':10s} {'k':>4s} {'direct':>8s} {'x8 effort':>9s}")
    for n_colours in (100, 300):
        image = blocks(n_colours)(640, 400)
        hist = ColorHistogram.from_image(image)
        for k in (16, 37, 64, 128, 256):
            bound = lower_bound(hist, k, weights)
            ratios = [oracle_score(image, quantized("direct", image, k)) / bound]
            if k == 37:
                ratios.append(oracle_score(image, quantized("direct", image, k, **MORE)) / bound)
            print(f"blocks_{n_colours:<3d} {k:4d} " + " ".join(f"{r:8.4f}" for r in ratios), flush=True)


if __name__ == "__main__":
    main()
