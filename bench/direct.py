"""Benchmark of the ``direct`` method against the lower bound and K-means.

Prints, per photograph: score, lower bound (the k-aware one, ``cq.bound``), gap = score/bound - 1,
ratio to the K-means score and
the median time of ``--repeats`` runs (method call only; the histogram is built once); then the
geometric means over the photographs, the synthetic colour wheel apart, and the time for one
20-megapixel image (astronaut upscaled with Pillow plus a little noise). Run: python bench/direct.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _photos import PHOTOS, SYNTHETIC  # noqa: E402

from cq.finalize import finalize  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402
from cq.methods import Problem, get_method  # noqa: E402
from cq.bound import lower_bound as k_lower_bound  # noqa: E402
from cq.objective import score_assignment  # noqa: E402


def lower_bound(hist: ColorHistogram) -> float:
    """The k-aware bound: exactly K distinct uint8 colours."""
    return k_lower_bound(hist, K)

K = 37


def quantize(method_name: str, image: np.ndarray, hist: ColorHistogram, repeats: int):
    """Score of a method's finalised result and its median wall and CPU times over ``repeats`` runs.

    CPU time (all threads) is reported too because wall time swings on a shared machine.
    """
    method = get_method(method_name)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        proposal = method.fn(Problem(image, hist, K), **method.defaults)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
    return score_assignment(hist, q.palette, q.labels).score, statistics.median(wall), statistics.median(cpu)


def big_image(width: int = 5200, height: int = 3900, noise: int = 3) -> np.ndarray:
    """Astronaut upscaled to about 20 megapixels, with uniform noise of +-``noise`` so it has many colours."""
    from skimage import data

    up = np.asarray(Image.fromarray(data.astronaut()).resize((width, height), Image.BICUBIC), dtype=np.int16)
    up += np.random.default_rng(0).integers(-noise, noise + 1, size=up.shape, dtype=np.int16)
    return np.clip(up, 0, 255).astype(np.uint8)


def row(name: str, image: np.ndarray, repeats: int) -> dict:
    hist = ColorHistogram.from_image(image)
    ours, seconds, cpu = quantize("direct", image, hist, repeats)
    kmeans, _, _ = quantize("kmeans", image, hist, 1)
    bound = lower_bound(hist)
    return {"image": name, "size": f"{image.shape[1]}x{image.shape[0]}", "colours": hist.n_colors,
            "score": ours, "bound": bound, "gap": ours / bound - 1, "vs_kmeans": ours / kmeans,
            "seconds": seconds, "cpu": cpu}


def print_table(rows: list[dict]) -> None:
    print(f"{'image':22s} {'size':>10s} {'colours':>8s} {'score':>9s} {'bound':>9s} {'gap %':>7s} "
          f"{'/kmeans':>8s} {'time s':>7s} {'cpu s':>6s}")
    for r in rows:
        print(f"{r['image']:22s} {r['size']:>10s} {r['colours']:8d} {r['score']:9.1f} {r['bound']:9.1f} "
              f"{100 * r['gap']:7.2f} {r['vs_kmeans']:8.3f} {r['seconds']:7.2f} {r['cpu']:6.2f}")


def geometric_mean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per image (median reported)")
    parser.add_argument("--no-big", action="store_true", help="skip the 20-megapixel image")
    args = parser.parse_args()

    rows = [row(name, load(), args.repeats) for name, load in PHOTOS.items()]
    print_table(rows)
    print(f"{'geometric mean':22s} {'':>10s} {'':>8s} {'':>9s} {'':>9s} "
          f"{100 * (geometric_mean([1 + r['gap'] for r in rows]) - 1):7.2f} "
          f"{geometric_mean([r['vs_kmeans'] for r in rows]):8.3f} "
          f"{geometric_mean([r['seconds'] for r in rows]):7.2f} "
          f"{geometric_mean([r['cpu'] for r in rows]):6.2f}")
    print(f"worst gap {100 * max(r['gap'] for r in rows):.2f}%, "
          f"slowest {max(r['seconds'] for r in rows):.2f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("\nsynthetic")
    print_table([row(name, load(), args.repeats) for name, load in SYNTHETIC.items()])
    if not args.no_big:
        image = big_image()
        start = time.perf_counter()
        hist = ColorHistogram.from_image(image)
        hist_seconds = time.perf_counter() - start
        ours, seconds, cpu = quantize("direct", image, hist, args.repeats)
        bound = lower_bound(hist)
        print(f"\n20-megapixel astronaut {image.shape[1]}x{image.shape[0]}, {hist.n_colors} colours: "
              f"direct {seconds:.2f} s, cpu {cpu:.2f} s (median of {args.repeats}; "
              f"histogram {hist_seconds:.2f} s more), "
              f"gap {100 * (ours / bound - 1):.2f}%")


if __name__ == "__main__":
    main()
