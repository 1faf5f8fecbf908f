"""Is direct's gap to the k-aware bound the optimiser's or the bound's? Much more effort on the
classes where direct sits furthest from the bound.

    python bench/effort.py [--classes noise photo] [--n 5]

Per image (tests/test_never_beaten.py's Case(kind, seed, k), k >= BOUND_K): direct / bound with
its defaults, with 8x the starts and 3-4x every iteration count, and kmeans with 32 inits.
When 8x the effort barely moves direct, no cheap optimisation is left and the rest of the gap
is most likely the bound's looseness.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

from test_never_beaten import BOUND_K, KS, Case, oracle_score, quantized  # noqa: E402

from cq.bound import lower_bound  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402

MORE = {"n_starts": 32, "coarse_iter": 200, "fine_iter": 80, "int_iter": 30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", default=["noise", "photo"])
    parser.add_argument("--n", type=int, default=5, help="seeds per class (k = KS[seed % 5])")
    args = parser.parse_args()
    print(f"{'class':8s} {'seed':>4s} {'k':>4s} {'direct':>8s} {'x8 effort':>9s} {'kmeans x32':>10s}  (score / k-aware bound)")
    for kind in args.classes:
        for seed in range(args.n):
            k = KS[seed % len(KS)]
            if k < BOUND_K:
                continue
            image = Case(kind, seed, k).image()
            bound = lower_bound(ColorHistogram.from_image(image), k)
            ratios = [oracle_score(image, quantized(m, image, k, **p)) / bound
                      for m, p in (("direct", {}), ("direct", MORE), ("kmeans", {"n_init": 32}))]
            print(f"{kind:8s} {seed:4d} {k:4d} " + " ".join(f"{r:{w}.4f}" for r, w in zip(ratios, (8, 9, 10))), flush=True)


if __name__ == "__main__":
    main()
