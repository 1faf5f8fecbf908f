"""Benchmark of the ``cnn`` method against the lower bound and K-means, on the CPU.

Prints, per photograph: the cnn score, the lower bound, gap = score/bound - 1, the ratio to the
K-means score, the epoch kept, and the wall and CPU time of the cnn call (the histogram is built
once; CPU time is shown because wall time swings on a shared machine); then geometric means.
Run: python bench/cnn.py [--photos a,b] [--param name=value ...]
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _photos import PHOTOS  # noqa: E402

from cq.finalize import finalize  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402
from cq.methods import Problem, get_method  # noqa: E402
from cq.objective import lower_bound, score_assignment  # noqa: E402

K = 37


def run(method_name: str, problem: Problem, **params):
    """Exact score of a method's finalised result, its wall and CPU seconds, and its proposal."""
    wall, cpu = time.perf_counter(), time.process_time()
    proposal = get_method(method_name).fn(problem, **params)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    quant = finalize(problem.hist, proposal.palette, proposal.labels, k=problem.k, rule=proposal.rule)
    return score_assignment(problem.hist, quant.palette, quant.labels).score, wall, cpu, proposal


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated photo names")
    parser.add_argument("--param", action="append", default=[], help="cnn parameter name=value")
    args = parser.parse_args(argv)
    params = {"device": "cpu"}
    for item in args.param:
        name, value = item.split("=", 1)
        params[name] = ast.literal_eval(value)

    header = f"{'photo':22s} {'size':>9s} {'score':>9s} {'bound':>9s} {'gap':>7s} {'vs kmeans':>9s} {'epoch':>5s} {'wall s':>7s} {'cpu s':>6s}"
    print(f"cnn {params}\n{header}\n{'-' * len(header)}", flush=True)
    gaps, ratios, walls, cpus = [], [], [], []
    for name in args.photos.split(","):
        image = np.ascontiguousarray(PHOTOS[name]()[..., :3])
        problem = Problem(image, ColorHistogram.from_image(image), K)
        bound = lower_bound(problem.hist)
        score, wall, cpu, proposal = run("cnn", problem, **params)
        kmeans = run("kmeans", problem)[0]
        gaps.append(score / bound)
        ratios.append(score / kmeans)
        walls.append(wall)
        cpus.append(cpu)
        size = f"{image.shape[1]}x{image.shape[0]}"
        print(f"{name:22s} {size:>9s} {score:9.1f} {bound:9.1f} {score / bound - 1:7.2%} {score / kmeans:9.3f} "
              f"{proposal.extras['best_epoch'] + 1:5d} {wall:7.1f} {cpu:6.1f}", flush=True)
    print("-" * len(header))
    print(f"{'geometric mean':22s} {'':>9s} {'':>9s} {'':>9s} {geomean(gaps) - 1:7.2%} {geomean(ratios):9.3f} "
          f"{'':>5s} {geomean(walls):7.1f} {geomean(cpus):6.1f}")
    print(f"cnn beats kmeans on {sum(r < 1 for r in ratios)}/{len(ratios)} photographs")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
