"""Benchmark of the ``cnn`` method on the CPU: quality against the lower bound and K-means, the
training's own gain, CPU seconds per photo, and batched training (``train_many``) against one
image at a time.

Photographs: scikit-image's bundled ones, resized to 640x480 (``--size``). Per photo it prints
the network's start (``init_score``), its best epoch, the uint8-finished result (what the
record's score is), each as score / lower bound; the training gain (1 - best / init); the
ratio to K-means; the epoch kept / epochs run; which finish won; and the CPU and wall seconds of
the cnn call (the histogram is built before; CPU time is what counts on a shared machine). Then
geometric means, the smallest gain, the median CPU time and the targets of issue 12. The first
call's imports (torch, scikit-learn) are timed apart: a per-image job pays them once.

Ablations: rerun with ``--param name=value`` (e.g. ``start='ideal'``, ``lr_body=0.0``,
``finish=0``); ``--batch`` also times ``train_many`` over all photos at once.
Run: python bench/cnn.py [--photos a,b] [--param name=value ...] [--batch] [--no-kmeans]
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _photos import PHOTOS  # noqa: E402

from cq.finalize import finalize  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402
from cq.methods import Problem, get_method  # noqa: E402
from cq.objective import lower_bound_any_k  # noqa: E402

K = 37


def load(name: str, size: tuple[int, int]) -> np.ndarray:
    """A bundled photograph as RGB uint8, resized (Lanczos) to ``size`` = (width, height)."""
    image = np.ascontiguousarray(PHOTOS[name]()[..., :3])
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


def timed(fn, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - wall, time.process_time() - cpu


def exact_score(problem: Problem, proposal) -> float:
    quant = finalize(problem.hist, proposal.palette, proposal.labels, k=problem.k, rule=proposal.rule)
    return quant.score(problem.hist).score


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def parse_params(items) -> dict:
    params = {"device": "cpu"}
    for item in items:
        name, value = item.split("=", 1)
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    return params


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated photo names")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT the photos are resized to")
    parser.add_argument("--param", action="append", default=[], help="cnn parameter name=value")
    parser.add_argument("--batch", action="store_true", help="also time train_many over all photos at once")
    parser.add_argument("--no-kmeans", action="store_true", help="skip the K-means comparison")
    args = parser.parse_args(argv)
    params = parse_params(args.param)
    size = tuple(int(v) for v in args.size.split("x"))
    names = args.photos.split(",")
    method = get_method("cnn")
    print(f"cnn v{method.version} {params}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    problems = {}
    for name in names:
        image = load(name, size)
        problems[name] = Problem(image, ColorHistogram.from_image(image), K)
    tiny = load(names[0], (32, 24))
    _, wall, cpu = timed(method.fn, Problem(tiny, ColorHistogram.from_image(tiny), K), epochs=0, device=params["device"])
    print(f"first call (imports torch, scikit-learn): {wall:.1f} s wall, {cpu:.1f} s CPU; not counted below\n")

    header = (f"{'photo':21s} {'init':>7s} {'best':>7s} {'final':>7s} {'gain':>6s} {'vs km':>6s} "
              f"{'epoch':>7s} {'finish':>18s} {'cpu s':>6s} {'wall s':>6s}")
    print(f"score / lower bound (any-k)\n{header}\n{'-' * len(header)}", flush=True)
    rows = []
    for name, problem in problems.items():
        bound = lower_bound_any_k(problem.hist)
        proposal, wall, cpu = timed(method.fn, problem, **params)
        e = proposal.extras
        final = exact_score(problem, proposal)
        kmeans = np.nan if args.no_kmeans else exact_score(problem, get_method("kmeans").fn(problem))
        rows.append((e["init_score"] / bound, e["best_score"] / bound, final / bound, e["gain"], final / kmeans, cpu))
        print(f"{name:21s} {e['init_score'] / bound:7.4f} {e['best_score'] / bound:7.4f} {final / bound:7.4f} "
              f"{e['gain']:6.2%} {final / kmeans:6.3f} {e['best_epoch']:3d}/{e['epochs_run']:<3d} "
              f"{e['finish']:>18s} {cpu:6.1f} {wall:6.1f}", flush=True)
    init, best, final, gain, vs_kmeans, cpus = (np.array(col) for col in zip(*rows))
    print("-" * len(header))
    print(f"{'geometric mean':21s} {geomean(init):7.4f} {geomean(best):7.4f} {geomean(final):7.4f} "
          f"{'':6s} {geomean(vs_kmeans):6.3f}")
    print(f"\ntargets (issue 12), on these {len(rows)} photos:")
    print(f"  geomean final / bound <= 1.006:          {geomean(final):.4f}  {'met' if geomean(final) <= 1.006 else 'MISSED'}")
    if not args.no_kmeans:
        wins = int((vs_kmeans < 1).sum())
        print(f"  beats kmeans on every photo:              {wins}/{len(rows)}  {'met' if wins == len(rows) else 'MISSED'}")
    low = int((gain < 0.003).sum())
    print(f"  best >= 0.3% better than init, each photo: smallest gain {gain.min():.2%}, "
          f"{low} below  {'met' if low == 0 else 'MISSED'}")
    print(f"  median CPU s per photo <= 8:              {np.median(cpus):.1f}  {'met' if np.median(cpus) <= 8 else 'MISSED'}")
    if args.batch:
        batch(method, list(problems.values()), params)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def batch(method, problems, params) -> None:
    """Images per second: ``train_many`` over all problems at once against one call per image."""
    from cq.methods.cnn import make_config, train_many

    device = params.pop("device")
    config = make_config(**params)
    _, wall_one, cpu_one = timed(lambda: [train_many([p], config, device) for p in problems])
    _, wall_all, cpu_all = timed(train_many, problems, config, device)
    n = len(problems)
    print(f"\nbatched training on {device}, {n} images: one at a time {n / wall_one:.2f} images/s wall "
          f"({cpu_one / n:.1f} CPU s each); train_many {n / wall_all:.2f} images/s wall ({cpu_all / n:.1f} CPU s each)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
