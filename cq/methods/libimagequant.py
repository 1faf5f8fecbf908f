"""libimagequant (pngquant's library) through the ``imagequant`` package, without dithering.

An optional extra (``pip install cq[libimagequant]``): without it the method reports in one line
that the package is missing. The raw-bytes entry point is used because the package's Pillow
helper converts pixels in a Python loop, far too slow for large images.
"""

from __future__ import annotations

import numpy as np

from cq.methods import Problem, Proposal, register


@register("libimagequant", version="2", requires=("imagequant",))
def libimagequant(problem: Problem) -> Proposal:
    """libimagequant's palette and pixel mapping at maximum quality, no dithering."""
    import imagequant

    h, w = problem.image.shape[:2]
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = problem.image, 255
    index_bytes, palette = imagequant.quantize_raw_rgba_bytes(
        rgba.tobytes(), w, h, dithering_level=0.0, max_colors=problem.k, min_quality=0, max_quality=100)
    index = np.frombuffer(index_bytes, dtype=np.uint8).astype(np.int64)
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 4)[:, :3]
    labels = np.zeros(problem.hist.n_colors, dtype=np.int64)
    labels[problem.hist.inverse] = index
    return Proposal(palette, labels)
