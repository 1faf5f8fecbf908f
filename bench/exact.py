"""Exactness at the size limit: the score of an image at ``read.max_pixels`` against float64.

Builds astronaut upscaled to just under the default limit (89,478,485 pixels, Pillow's), adds
a little noise so it has millions of distinct colours, then
1. scores its complement (every value 255 - v: the largest MSE there is) with cq.objective.score
   and with an independent float64 oracle written here from docs/objective.md's definition;
2. runs one method through cq.pipeline.quantize_file (the record's score, checked by the
   pipeline's own re-read of the PNG) and scores the written PNG with the oracle.
Prints each pair, their relative difference, CPU and wall times and the peak memory.
Run: python bench/exact.py [--method median_cut] [--pixels N]
"""

from __future__ import annotations

import argparse
import itertools
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cq.imageio import DEFAULT_MAX_PIXELS  # noqa: E402
from cq.objective import score  # noqa: E402
from cq.pipeline import Job, quantize_file  # noqa: E402

VERTICES = np.array(list(itertools.product([0.0, 255.0], repeat=3)))


def oracle(original: np.ndarray, quantized: np.ndarray) -> float:
    """2*MSE + 21*max_cost + 42*mean_cost, per pixel in float64 with the 8 vertices spelt out."""
    a, b = original.reshape(-1, 3), quantized.reshape(-1, 3)
    sq = cost_sum = cost_max = 0.0
    step = 1 << 20
    for s in range(0, len(a), step):
        d = a[s:s + step].astype(np.float64) - b[s:s + step]
        sq += float(np.einsum("ij,ij->", d, d))
        q = b[s:s + step].astype(np.float64)
        cost = np.sqrt(((q[:, None, :] - VERTICES[None]) ** 2).sum(2)).min(1)
        cost_sum += float(cost.sum())
        cost_max = max(cost_max, float(cost.max()))
    return 2 * sq / a.size + 21 * cost_max + 42 * cost_sum / len(a)


def big_image(pixels: int) -> np.ndarray:
    height = int((pixels / 1.5) ** 0.5)
    width = pixels // height
    image = Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BILINEAR)
    noisy = np.asarray(image).astype(np.int16)
    noisy += np.random.default_rng(0).integers(-2, 3, noisy.shape, dtype=np.int16)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def timed(label, fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    print(f"  {label}: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU")
    return out


def compare(label: str, ours: float, truth: float) -> None:
    print(f"{label}: cq {ours:.6f}  oracle {truth:.6f}  rel. difference {abs(ours - truth) / truth:.2e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="median_cut")
    ap.add_argument("--pixels", type=int, default=DEFAULT_MAX_PIXELS)
    args = ap.parse_args()
    image = big_image(args.pixels)
    print(f"image {image.shape[1]} x {image.shape[0]} = {image.shape[0] * image.shape[1]:,} pixels")
    far = 255 - image
    compare("complement", timed("cq score", lambda: score(image, far)).score, timed("oracle", lambda: oracle(image, far)))
    del far
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.png"
        Image.fromarray(image).save(src, compress_level=1)
        record = timed(f"quantize_file({args.method})",
                       lambda: quantize_file(src, Path(tmp) / "q.png", Path(tmp) / "q.json", Job(method=args.method)))
        if record["status"] != "ok":
            sys.exit(f"record is an error: {record['error']}")
        written = np.asarray(Image.open(Path(tmp) / "q.png").convert("RGB"))
        compare(f"{args.method} record", record["scores"]["score"], timed("oracle", lambda: oracle(image, written)))
        print(f"  record: mse {record['scores']['mse']:.3f}, bound {record['scores']['lower_bound']:.3f}, "
              f"{record['n_colors']} colours")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
