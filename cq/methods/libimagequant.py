"""libimagequant (pngquant's library) through the ``imagequant`` package, without dithering.

An optional extra (``pip install cq[libimagequant]``): without it the method reports in one line
that the package is missing.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cq.methods import Problem, Proposal, register


@register("libimagequant", version="1", requires=("imagequant",))
def libimagequant(problem: Problem) -> Proposal:
    """libimagequant's palette and pixel mapping at maximum quality, no dithering."""
    import imagequant

    im = Image.fromarray(problem.image, "RGB").convert("RGBA")
    q = imagequant.quantize_pil_image(im, dithering_level=0.0, max_colors=problem.k,
                                      min_quality=0, max_quality=100)
    channels = 4 if q.palette.mode == "RGBA" else 3
    palette = np.asarray(q.getpalette(q.palette.mode), dtype=np.uint8).reshape(-1, channels)[:, :3]
    index = np.asarray(q, dtype=np.int64).reshape(-1)
    labels = np.zeros(problem.hist.n_colors, dtype=np.int64)
    labels[problem.hist.inverse] = index
    return Proposal(palette[: index.max() + 1], labels)
