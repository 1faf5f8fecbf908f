"""direct (and cnn) per image class of tests/test_never_beaten.py: ratio to the k-aware bound,
ratio to the best other method, CPU seconds.

Per class, ``--n`` seeds, seed i with k = KS[i % 5]: direct / k-aware bound (geometric mean, worst,
worst for k >= 16: with k = 2 the bound is far from reachable), direct / best baseline (worst: above 1 means beaten), direct's mean CPU s; then the
same table for cnn (a short training) against the baselines. Scores come from the test's own
float64 oracle. Run: python bench/classes.py [--n 3] [--cnn-epochs 6] [--no-cnn]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_never_beaten import BASELINES, BOUND_K, KINDS, KS, Case, oracle_score, quantized  # noqa: E402

from cq.bound import lower_bound  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402


def measure(method: str, image: np.ndarray, k: int, **params) -> tuple[float, float]:
    """(oracle score, CPU seconds) of one method on one image."""
    start = time.process_time()
    out = quantized(method, image, k, **params)
    return oracle_score(image, out), time.process_time() - start


def table(method: str, n: int, **params) -> None:
    print(f"\n{method}: per class over {n} images (k drawn from {KS})")
    print(f"{'class':12s} {'/bound geo':>10s} {'/bound worst':>12s} {f'worst k>={BOUND_K}':>12s} "
          f"{'/best other worst':>17s} {'CPU s':>7s}")
    for kind in KINDS:
        bound_r, other_r, cpus, ks = [], [], [], []
        for seed in range(n):
            k = KS[seed % len(KS)]
            image = Case(kind, seed, k).image()
            ours, cpu = measure(method, image, k, **params)
            others = [measure(m, image, k)[0] for m in BASELINES]
            bound_r.append(ours / lower_bound(ColorHistogram.from_image(image), k))
            other_r.append(ours / min(others))
            cpus.append(cpu)
            ks.append(k)
        large = [r for r, k in zip(bound_r, ks) if k >= BOUND_K]
        print(f"{kind:12s} {np.exp(np.mean(np.log(bound_r))):10.4f} {max(bound_r):12.4f} {max(large, default=np.nan):12.4f} "
              f"{max(other_r):17.4f} {np.mean(cpus):7.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="images per class")
    parser.add_argument("--cnn-epochs", type=int, default=6)
    parser.add_argument("--no-cnn", action="store_true")
    args = parser.parse_args()
    table("direct", args.n)
    if not args.no_cnn:
        table("cnn", args.n, epochs=args.cnn_epochs, device="cpu")


if __name__ == "__main__":
    main()
