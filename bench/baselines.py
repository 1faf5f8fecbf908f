"""Baselines on scikit-image's photographs: score, ratio to kmeans, gap to the bound, time.

Run: python bench/baselines.py [--methods kmeans,median_cut,...]
Every figure comes from cq.pipeline.quantize_array and cq.objective.score on the written image.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _photos import PHOTOS  # noqa: E402

from cq.histogram import ColorHistogram  # noqa: E402
from cq.objective import lower_bound_any_k, score  # noqa: E402
from cq.pipeline import Job, quantize_array  # noqa: E402

BASELINES = ["kmeans", "median_cut", "octree", "libimagequant"]


def run(method: str, image) -> tuple[float, float]:
    """(score, seconds) of one method on one image, through the shared finalisation."""
    t0 = time.perf_counter()
    palette, index, _ = quantize_array(image, Job(method=method))
    seconds = time.perf_counter() - t0
    s = score(image, palette[index])
    assert s.n_colors == 37, (method, s.n_colors)
    return s.score, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(BASELINES))
    methods = ap.parse_args().methods.split(",")
    ratios = {m: [] for m in methods}
    gaps = {m: [] for m in methods}
    times = {m: [] for m in methods}
    print(f"{'image':22s} {'method':14s} {'score':>10s} {'/kmeans':>8s} {'gap':>8s} {'time s':>7s}")
    for name, load in PHOTOS.items():
        image = load()
        lb = lower_bound_any_k(ColorHistogram.from_image(image, with_inverse=False))
        results = {m: run(m, image) for m in methods}
        ref = results.get("kmeans", (math.nan,))[0]
        for m, (s, sec) in results.items():
            ratios[m].append(s / ref)
            gaps[m].append(s / lb - 1)
            times[m].append(sec)
            print(f"{name:22s} {m:14s} {s:10.1f} {s / ref:8.3f} {s / lb - 1:8.1%} {sec:7.2f}")
    print("\ngeometric means over", len(PHOTOS), "photographs")
    print(f"{'method':14s} {'/kmeans':>8s} {'gap':>8s} {'mean time s':>12s}")
    for m in methods:
        gm_ratio = math.exp(sum(map(math.log, ratios[m])) / len(ratios[m]))
        gm_gap = math.exp(sum(math.log(1 + g) for g in gaps[m]) / len(gaps[m])) - 1
        print(f"{m:14s} {gm_ratio:8.3f} {gm_gap:8.1%} {sum(times[m]) / len(times[m]):12.2f}")


if __name__ == "__main__":
    main()
