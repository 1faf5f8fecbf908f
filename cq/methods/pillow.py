"""Pillow's median cut and fast octree quantizers, without dithering.

Pillow returns up to ``k`` colours and its own pixel mapping; that mapping is kept (it is the
method) and the palette goes through the shared exactly-k finalisation.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from cq.methods import Problem, Proposal, register


def _pillow_quantize(problem: Problem, method: Image.Quantize) -> Proposal:
    im = Image.fromarray(problem.image, "RGB")
    q = im.quantize(colors=problem.k, method=method, dither=Image.Dither.NONE)
    palette = np.asarray(q.getpalette(), dtype=np.uint8)[: 3 * 256].reshape(-1, 3)
    index = np.asarray(q, dtype=np.int64).reshape(-1)
    labels = np.empty(problem.hist.n_colors, dtype=np.int64)
    labels[problem.hist.inverse] = index  # equal colours map equally in Pillow's quantizers
    return Proposal(palette[: index.max() + 1], labels)


@register("median_cut", version="2")
def median_cut(problem: Problem) -> Proposal:
    """Pillow's MEDIANCUT quantizer."""
    return _pillow_quantize(problem, Image.Quantize.MEDIANCUT)


@register("octree", version="2")
def octree(problem: Problem) -> Proposal:
    """Pillow's FASTOCTREE quantizer."""
    return _pillow_quantize(problem, Image.Quantize.FASTOCTREE)
