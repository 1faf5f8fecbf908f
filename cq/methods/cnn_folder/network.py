"""The folder network: the tutorial's convolutional palette network, shared by a folder's images.

Input: an image's thumbnail and its binned colour histogram (``features.py``). Body: 3x3
convolutions with ReLU and 2x2 max-pooling on the thumbnail (the tutorial's shape, kept small),
flattened and joined with the square roots of the bin shares and the lower bound's cap, then two
dense ReLU layers. Head: for each of the k palette colours, a logit per bin (a learned bias plus a
rank-``rank`` product of the features with a learned embedding of the bins) and, once, the log of
the max-cost cap ``T`` as a multiple of the lower bound's cap plus one.

A palette colour is the share-weighted mean of the bins' mean colours under its softmax over the
bins (so it lies among the image's own colours), moved toward its nearest cube vertex by the
objective's pull (the best colour of a cluster with that centroid, docs/objective.md); the
surrogate then holds it within ``T`` of the vertex. The head's bias starts as k anchors: a
logit of minus the squared distance of each bin centre to each anchor, so that the untrained
network already splits colour space into k regions and training learns how each image moves them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cq.methods.cnn_folder.features import bin_centres
from cq.objective import Weights


@dataclass(frozen=True)
class Shape:
    """The network's shape: palette size, thumbnail side, conv widths, dense width, histogram bits."""

    k: int
    input_size: int = 32
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 256
    bin_bits: int = 3
    rank: int = 16

    def as_dict(self) -> dict:
        return {**asdict(self), "channels": list(self.channels)}


class FolderNet(nn.Module):
    """Thumbnail + histogram -> raw palette (B, k, 3) in 0..255 units and max-cost cap (B,)."""

    def __init__(self, shape: Shape, anchors: np.ndarray, weights: Weights = Weights()):
        super().__init__()
        if shape.input_size % (1 << len(shape.channels)):
            raise ValueError(f"cnn_folder: input_size {shape.input_size} is not divisible by "
                             f"2**{len(shape.channels)} (channels)")
        self.shape, self.pull = shape, float(weights.vertex_pull)
        widths = (3, *shape.channels)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:]))
        side = shape.input_size >> len(shape.channels)
        n_bins = 1 << (3 * shape.bin_bits)
        self.dense = nn.Sequential(nn.Linear(widths[-1] * side * side + n_bins + 1, shape.hidden), nn.ReLU(),
                                   nn.Linear(shape.hidden, shape.hidden), nn.ReLU())
        self.head = nn.Linear(shape.hidden, shape.k * shape.rank + 1)
        self.bins = nn.Parameter(torch.randn(shape.rank, n_bins) / np.sqrt(shape.rank))
        self.register_buffer("centres", torch.as_tensor(bin_centres(shape.bin_bits), dtype=torch.float32))
        self.anchors = nn.Parameter(self.anchor_logits(anchors))
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.zero_()

    def anchor_logits(self, anchors: np.ndarray):
        """(k, bins) logits whose softmax gives each colour the bins near its anchor."""
        a = torch.as_tensor(np.asarray(anchors), dtype=torch.float32)
        bin_width = 256.0 / (1 << self.shape.bin_bits)
        d2 = ((a[:, None, :] - self.centres[None]) ** 2).sum(-1)
        return -d2 / (2 * bin_width**2)

    def forward(self, thumb, share, means, cap_hint, blind: bool = False):
        """Raw palettes (B, k, 3) (pulled toward their vertices, not yet capped) and caps (B,).

        ``blind`` (the ablation): the network sees constants in place of the thumbnail, the bin
        shares and the cap hint; the palette still mixes the image's own bins by their true shares.
        """
        seen = share
        if blind:
            thumb, seen, cap_hint = (torch.full_like(thumb, 0.5), torch.full_like(share, 1.0 / share.shape[1]),
                                     torch.full_like(cap_hint, 30.0))
        h = thumb
        for conv in self.convs:
            h = F.max_pool2d(F.relu(conv(h)), 2)
        hint = (cap_hint + 1.0).log().unsqueeze(1)
        h = self.dense(torch.cat([h.flatten(1), seen.clamp_min(0).sqrt(), hint], dim=1))
        out = self.head(h)
        low_rank = out[:, :-1].reshape(len(out), self.shape.k, self.shape.rank) @ self.bins
        mix = torch.softmax(self.anchors + low_rank + share.clamp_min(1e-12).log().unsqueeze(1), dim=2)
        return self.pulled(mix @ means), (cap_hint + 1.0) * out[:, -1].exp()

    def pulled(self, centroid):
        """Each colour moved toward its nearest vertex by the objective's pull (onto it if nearer)."""
        vertex = (centroid.detach() > 127.5).to(centroid.dtype) * 255.0
        offset = centroid - vertex
        radius = (offset * offset).sum(-1, keepdim=True).add(1e-6).sqrt()
        return vertex + offset * (radius - self.pull).clamp_min(0.0) / radius


def inputs(batch, device):
    """Stacked (thumbs, shares, means) tensors of a list of Features on ``device``."""
    return tuple(torch.as_tensor(np.stack([getattr(f, name) for f in batch]), device=device)
                 for name in ("thumb", "share", "means", "cap_hint"))

