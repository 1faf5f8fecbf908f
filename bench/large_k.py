"""direct on dark, bright and page images at large k: CPU seconds and score per case.

    python bench/large_k.py [--k 16,37,64,256] [--repo PATH]

Where the best max cost is small (dark photos, near-white pages) direct's lattice search runs,
and the exactly-k finalisation adds many colours by splitting pixels off: the two costs that a
held-out dark crop at k = 256 showed (46 CPU s). The images: scikit-image photographs darkened or
brightened, a noisy near-white page, and 64x64 and 256x192 dark pictures. ``--repo`` runs another
checkout's cq (compare two commits in one sitting: the machine is shared and noisy). Prints one
line per case (score, score / k-aware bound, CPU s) and the total CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image


def images() -> dict[str, np.ndarray]:
    """Dark, bright and page pictures, small enough for a few seconds each."""
    from skimage import data

    rng = np.random.default_rng(5)
    page = np.full((120, 200, 3), 250, np.uint8)
    page[rng.random((120, 200)) < 0.05] = 120

    def resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))

    return {
        "astronaut x0.12": (data.astronaut()[::3, ::3] * 0.12).astype(np.uint8),
        "coffee x0.2": (data.coffee()[::3, ::3] * 0.2).astype(np.uint8),
        "rocket x0.08": (data.rocket()[::3, ::3] * 0.08).astype(np.uint8),
        "chelsea bright": (255 - (255 - data.chelsea()[::2, ::2]) * 0.1).astype(np.uint8),
        "page": page,
        "astronaut 64 x0.2": (resized(data.astronaut(), (64, 64)) * 0.2).astype(np.uint8),
        "coffee 256x192 x0.3": (resized(data.coffee(), (256, 192)) * 0.3).astype(np.uint8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", default="16,37,64,256")
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    import cq
    from cq.bound import lower_bound
    from cq.pipeline import Job, quantize_array

    print(f"cq from {Path(cq.__file__).parent}")
    total = 0.0
    for name, image in images().items():
        for k in (int(x) for x in args.k.split(",")):
            start = time.process_time()
            q, hist, _ = quantize_array(image, Job("direct", k=k))
            cpu = time.process_time() - start
            total += cpu
            s = q.score(hist, cq.Weights()).score
            print(f"{name:22s} k={k:3d}  score {s:10.3f}  / bound {s / lower_bound(hist, k):.4f}  {cpu:6.2f} CPU s",
                  flush=True)
    print(f"total {total:.1f} CPU s")


if __name__ == "__main__":
    main()
