"""Exactly-k finalisation, shared by every method.

A method proposes a palette (floats, any count up to k or a little over) and optionally an
assignment of the histogram colours to it. Rounding to uint8 can merge colours and a colour
can end up with no pixel, so this module turns any proposal into a palette of exactly ``k``
distinct uint8 colours, each used by at least one pixel, repairing where the objective says
it costs least. Images with fewer than ``k`` distinct colours are returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cq.histogram import ColorHistogram, pack_rgb
from cq.objective import Weights, vertex_cost

ASSIGN_RULES = ("nearest", "objective")
_CHUNK = 1 << 16
_STEPS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@dataclass(frozen=True)
class Quantization:
    """A final palette of distinct uint8 colours and the palette index of each histogram colour."""

    palette: np.ndarray
    labels: np.ndarray
    notes: tuple[str, ...] = ()

    def render(self, hist: ColorHistogram) -> np.ndarray:
        """The quantized (H, W, 3) uint8 image."""
        return hist.render(self.palette[self.labels])


def pixel_costs(colors: np.ndarray, palette: np.ndarray, weights: Weights, rule: str) -> np.ndarray:
    """(n, m) per-pixel cost of giving colour i the palette colour j, under an assignment rule.

    ``nearest`` is the squared distance; ``objective`` adds the colour-cost term, so that
    ``argmin`` is the assignment that minimises the score for this palette (OBJECTIVE.md).
    """
    if rule not in ASSIGN_RULES:
        raise ValueError(f"unknown assignment rule {rule!r}; expected one of {ASSIGN_RULES}")
    c = colors.astype(np.float64)
    p = np.asarray(palette, dtype=np.float64)
    d2 = (c * c).sum(1)[:, None] - 2.0 * c @ p.T + (p * p).sum(1)[None, :]
    np.maximum(d2, 0.0, out=d2)
    if rule == "nearest":
        return d2
    return weights.pixel_mse * d2 + weights.mean_cost * vertex_cost(p)[None, :]


def assign(hist: ColorHistogram, palette: np.ndarray, weights: Weights = Weights(),
           rule: str = "nearest") -> np.ndarray:
    """Palette index for every histogram colour, in chunks to bound memory."""
    out = np.empty(hist.n_colors, dtype=np.int64)
    for s in range(0, hist.n_colors, _CHUNK):
        out[s : s + _CHUNK] = pixel_costs(hist.colors[s : s + _CHUNK], palette, weights, rule).argmin(1)
    return out


def finalize(hist: ColorHistogram, palette: np.ndarray, labels: np.ndarray | None = None, *,
             k: int, weights: Weights = Weights(), rule: str = "nearest") -> Quantization:
    """Exactly ``k`` distinct, used uint8 colours from a proposed palette and assignment.

    Parameters
    ----------
    hist : the image's colour histogram.
    palette : (m, 3) proposed colours, any real values; rounded and clipped to uint8.
    labels : (n,) proposed palette index per histogram colour, or None to assign by ``rule``.
    k : the number of colours wanted.
    rule : how to assign when ``labels`` is None: ``nearest`` or ``objective``.
    """
    if hist.n_colors < k:
        return Quantization(hist.colors.copy(), np.arange(hist.n_colors), (f"fewer than k={k} colours: original kept",))
    pal = np.clip(np.rint(np.asarray(palette, dtype=np.float64)), 0, 255).astype(np.uint8)
    if labels is None:
        labels = assign(hist, pal, weights, rule)
    pal, labels = _compact(pal, np.asarray(labels))
    notes = []
    if len(pal) > k:
        notes.append(f"merged {len(pal) - k} colours")
        pal, labels = _merge_down(hist, pal, labels, k, weights)
    if len(pal) < k:
        notes.append(f"added {k - len(pal)} colours")
        pal, labels = _split_up(hist, pal, labels, k, weights)
    _check(pal, labels, k)
    return Quantization(pal, labels, tuple(notes))


def _compact(pal: np.ndarray, labels: np.ndarray):
    """Merge equal palette colours and drop unused ones; relabel."""
    keys, first, inv = np.unique(pack_rgb(pal), return_index=True, return_inverse=True)
    labels = inv[labels]
    used, labels = np.unique(labels, return_inverse=True)
    return pal[first[used]], labels.astype(np.int64)



def pixel_costs_rows(colors, targets, weights):
    """Row-wise per-pixel objective of colour i taking target colour i."""
    d = colors.astype(np.float64) - targets.astype(np.float64)
    return weights.pixel_mse * np.einsum("ij,ij->i", d, d) + weights.mean_cost * vertex_cost(targets)


def _merge_down(hist, pal, labels, k, weights):
    """Remove, one at a time, the colour whose removal raises the objective least."""
    while len(pal) > k:
        costs = np.concatenate([pixel_costs(hist.colors[s:s + _CHUNK], pal, weights, "objective")
                                for s in range(0, hist.n_colors, _CHUNK)])
        rows = np.arange(len(labels))
        own = costs[rows, labels]
        costs[rows, labels] = np.inf
        alt = costs.argmin(1)
        penalty = np.bincount(labels, weights=(costs[rows, alt] - own) * hist.counts, minlength=len(pal))
        drop = int(np.argmin(penalty))
        moved = labels == drop
        labels = np.where(moved, alt, labels)
        keep = np.arange(len(pal)) != drop
        remap = np.cumsum(keep) - 1
        pal, labels = pal[keep], remap[labels]
    return pal, labels


def _split_up(hist, pal, labels, k, weights):
    """Add colours one at a time where it costs least, until there are k.

    A candidate moves one histogram colour, whose palette colour keeps other pixels, either to
    its own exact colour or to a one-unit neighbour of its current palette colour. Each
    candidate's change of the score (per-pixel terms and the max-cost term) is exact.
    """
    n = hist.n_pixels
    colors = hist.colors
    while len(pal) < k:
        size = np.bincount(labels, minlength=len(pal))
        movable = np.flatnonzero(size[labels] >= 2)
        q = pal[labels[movable]].astype(np.int64)
        cands = np.concatenate([colors[movable][None].astype(np.int64), q[None] + _STEPS[:, None, :]])
        valid = np.all((cands >= 0) & (cands <= 255), axis=2)
        valid &= ~np.isin(pack_rgb(np.clip(cands, 0, 255)), pack_rgb(pal))
        max_cost = vertex_cost(pal).max()
        before = pixel_costs_rows(colors[movable], q, weights)
        delta = np.stack([pixel_costs_rows(colors[movable], c, weights) - before for c in cands])
        delta *= hist.counts[movable][None] / n
        delta += weights.max_cost * np.maximum(vertex_cost(cands) - max_cost, 0.0)
        delta[~valid] = np.inf
        which, pos = np.unravel_index(np.argmin(delta), delta.shape)
        pal = np.vstack([pal, cands[which, pos].astype(np.uint8)])
        labels = labels.copy()
        labels[movable[pos]] = len(pal) - 1
    return pal, labels


def _check(pal: np.ndarray, labels: np.ndarray, k: int) -> None:
    n_distinct = len(np.unique(pack_rgb(pal)))
    n_used = len(np.unique(labels))
    if not (len(pal) == n_distinct == n_used == k):
        raise AssertionError(f"finalisation produced {n_distinct} distinct / {n_used} used colours, not {k}")
