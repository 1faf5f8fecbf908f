"""Exactly-k finalisation, shared by every method.

A method proposes a palette (floats, any count up to k or a little over) and optionally an
assignment of the histogram colours to it. Rounding to uint8 can merge colours and a colour
can end up with no pixel, so this module turns any proposal into a palette of exactly ``k``
distinct uint8 colours, each used by at least one pixel, repairing where the objective says
it costs least. An image with fewer than ``k`` distinct colours still gets ``k``: pixels of
one input colour may then take different output colours (a *split*). Only an image with
fewer than ``k`` pixels cannot have ``k`` colours; it is refused.
"""

from __future__ import annotations

import heapq
import weakref
from dataclasses import dataclass

import numpy as np

from cq import lattice
from cq.histogram import ColorHistogram, pack_rgb
from cq.objective import Score, Weights, score_entries, vertex_cost

ASSIGN_RULES = ("nearest", "objective")
_CHUNK = 1 << 16
_STEPS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
# Where a split may send pixels: every lattice offset within 3 units per channel (342 of them,
# enough distinct colours around even a single-colour image's one colour).
_BALL = np.array([(r, g, b) for r in range(-3, 4) for g in range(-3, 4) for b in range(-3, 4)
                  if (r, g, b) != (0, 0, 0)])
_SPLIT_SOURCES = 64  # a split is sought among the entries of most pixels only


def _reach(spread: int) -> np.ndarray:
    """Where a split may send pixels once every colour of :data:`_BALL` around the large
    entries is taken (k = 256 on a few-colour screenshot): those offsets plus a 7x7x7 grid out
    to ``spread`` units per channel, so the candidates stay few however far they look."""
    if spread <= 3:
        return _BALL
    axis = np.arange(-spread, spread + 1, -(-spread // 3))
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return np.concatenate([_BALL, grid[np.abs(grid).max(1) > 3]])


class TooFewPixelsError(ValueError):
    """The image has fewer pixels than the k distinct colours asked for."""


def too_few_pixels(n_pixels: int, k: int) -> str:
    return f"the image has {n_pixels} pixel{'' if n_pixels == 1 else 's'}, fewer than the k={k} colours asked for"


@dataclass(frozen=True)
class Quantization:
    """A final palette of distinct uint8 colours and where each histogram colour's pixels go.

    ``labels[i]`` is the palette index of histogram colour i. ``splits`` lists the exceptions,
    ``(i, label, n)``: n pixels of colour i (the first n in raster order) take ``label``
    instead; only images with few colours need them.
    """

    palette: np.ndarray
    labels: np.ndarray
    notes: tuple[str, ...] = ()
    splits: tuple[tuple[int, int, int], ...] = ()

    def entries(self, hist: ColorHistogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(colour index, pixel count, palette index) of every group of pixels sharing both."""
        index = np.arange(hist.n_colors)
        counts = hist.counts.astype(np.int64).copy()
        if not self.splits:
            return index, counts, np.asarray(self.labels)
        moved = np.array(self.splits, dtype=np.int64).reshape(-1, 3)
        np.subtract.at(counts, moved[:, 0], moved[:, 2])
        return (np.concatenate([index, moved[:, 0]]), np.concatenate([counts, moved[:, 2]]),
                np.concatenate([self.labels, moved[:, 1]]))

    def score(self, hist: ColorHistogram, weights: Weights = Weights()) -> Score:
        """The exact score of this quantization, without rendering it."""
        index, counts, labels = self.entries(hist)
        keep = counts > 0
        return score_entries(hist.colors[index[keep]], counts[keep], self.palette, labels[keep], weights)

    def index_image(self, hist: ColorHistogram) -> np.ndarray:
        """The (H, W) palette index of every pixel."""
        if hist.inverse is None or hist.shape is None:
            raise ValueError("this histogram was built without its inverse")
        index = np.asarray(self.labels)[hist.inverse]
        pixels_of = {i: np.flatnonzero(hist.inverse == i) for i in {i for i, _, _ in self.splits}}
        done = dict.fromkeys(pixels_of, 0)  # one pass over the image per split colour, not per split
        for i, label, n in self.splits:
            index[pixels_of[i][done[i] : done[i] + n]] = label
            done[i] += n
        return index.reshape(hist.shape)

    def render(self, hist: ColorHistogram) -> np.ndarray:
        """The quantized (H, W, 3) uint8 image."""
        return self.palette[self.index_image(hist)]


def pixel_costs(colors: np.ndarray, palette: np.ndarray, weights: Weights, rule: str) -> np.ndarray:
    """(n, m) per-pixel cost of giving colour i the palette colour j, under an assignment rule.

    ``nearest`` is the squared distance; ``objective`` adds the colour-cost term, so that
    ``argmin`` is the assignment that minimises the score for this palette (docs/objective.md).
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
    if hist.n_pixels < k:
        raise TooFewPixelsError(too_few_pixels(hist.n_pixels, k))
    pal = np.clip(np.rint(np.asarray(palette, dtype=np.float64)), 0, 255).astype(np.uint8)
    if labels is None:
        labels = assign(hist, pal, weights, rule)
    pal, labels = _compact(pal, np.asarray(labels))
    notes, splits = [], ()
    if len(pal) > k:
        notes.append(f"merged {len(pal) - k} colours")
        pal, labels = _merge_down(hist, pal, labels, k, weights)
    if len(pal) < k:
        notes.append(f"added {k - len(pal)} colours")
        pal, labels, splits = _split_up_once(hist, pal, labels, k, weights)
        if splits:
            notes.append(f"split {len(splits)} groups of pixels off their colour")
    q = Quantization(pal, labels, tuple(notes), splits)
    _check(q, hist, k)
    return q


def _compact(pal: np.ndarray, labels: np.ndarray):
    """Merge equal palette colours and drop unused ones; relabel."""
    keys, first, inv = np.unique(pack_rgb(pal), return_index=True, return_inverse=True)
    labels = inv[labels]
    used, labels = np.unique(labels, return_inverse=True)
    return pal[first[used]], labels.astype(np.int64)



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


_last_split_up: list = []  # [(weakref to hist, palette bytes, labels bytes, k, weights), result]


def _split_up_once(hist, pal, labels, k, weights):
    """:func:`_best_split_up`, kept for the last arguments: ``direct`` finalises each stage's
    palette to compare them, then the pipeline finalises the winner again (a second of a dark
    photo's 18 MP run at k = 256). The histogram is referred to weakly: a shard job's next image
    does not keep the last one's (its inverse alone is 72 MB at 18 MP), and a dead reference
    never matches a new histogram."""
    key = (weakref.ref(hist), pal.tobytes(), labels.tobytes(), k, weights)
    if not (_last_split_up and _last_split_up[0][0]() is hist and _last_split_up[0][1:] == key[1:]):
        _last_split_up[:] = [key, _best_split_up(hist, pal, labels, k, weights)]
    pal, labels, splits = _last_split_up[1]
    return pal.copy(), labels.copy(), splits  # the kept arrays stay as computed


def _best_split_up(hist, pal, labels, k, weights):
    """:func:`_split_up` under the smallest max cost that k colours allow and under the max cost
    that :func:`_split_floor` estimates best (a few more colours near a vertex can beat single
    pixels sent to other vertices, which a one-move-at-a-time greedy never sees), and
    :func:`_batch_split_up`, which chooses all the missing colours at once; the lower exact
    score wins."""
    floors = {lattice.kth_smallest_cost(k), _split_floor(hist, pal, labels, k, weights)}
    results = [_split_up(hist, pal, labels, k, weights, floor) for floor in sorted(floors)]
    results.append(_batch_split_up(hist, pal, labels, k, weights))
    return min([r for r in results if r is not None], key=lambda r: Quantization(r[0], r[1], splits=r[2]).score(hist, weights).score)


def _split_floor(hist, pal, labels, k, weights):
    """The max cost (a lattice radius up to :func:`_near_cap`) at which adding the missing colours
    as single pixels, each at the colour within it that some pixel takes most cheaply, costs least."""
    cands = lattice.colors_within(_near_cap(k))
    cands = cands[~np.isin(pack_rgb(cands), pack_rgb(pal))]
    now = _objective_rows(hist.colors, pal[labels], weights)
    extra = _CheapestRows(hist.colors, now, weights).cheapest(cands, 1)[0][:, 0]
    costs, missing, base = vertex_cost(cands), k - len(pal), float(vertex_cost(pal).max())
    best = (np.inf, lattice.kth_smallest_cost(k))
    for radius in lattice.radii(_near_cap(k)):
        within = np.sort(extra[costs <= radius + 1e-9])
        if len(within) >= missing:
            total = weights.max_cost * max(radius, base) + within[:missing].sum() / hist.n_pixels
            best = min(best, (total, float(radius)))
    return best[1]


def _split_up(hist, pal, labels, k, weights, floor):
    """Add colours one at a time where it costs least, until there are k.

    The pixels are held as entries (colour, palette index, count). A candidate move sends a
    whole entry, whose palette colour keeps other pixels, to its own exact colour or to a
    one-unit neighbour of its palette colour; or it splits one pixel (or all that the colour
    can spare, where moving them lowers the score) off one of the largest entries, to a
    lattice colour near its palette colour or within the max cost. Each candidate's change of
    the score (per-pixel terms and the max-cost term) is exact, and the cheapest wins, so an
    extra colour never raises the max cost where a single pixel elsewhere costs less. A move
    changes no other entry's per-pixel change, so the table of whole-entry moves is built
    once and only patched, until a move raises the max cost. Raising the max cost up to
    ``floor`` is counted as free (k colours need at least the k-th smallest vertex distance).
    """
    colour = np.arange(hist.n_colors)
    count = hist.counts.astype(np.int64).copy()
    label = np.asarray(labels, dtype=np.int64).copy()
    table = splits = None
    spread = 3  # how far a split looks (see _reach): doubled whenever every colour in reach is taken
    while len(pal) < k:
        if table is None:
            size = np.bincount(label, weights=count, minlength=len(pal))
            table = _Moves(hist, pal, colour, count, label, np.flatnonzero(size[label] > count), weights, floor)
        if splits is None:
            splits = _Moves(hist, pal, colour, count, label, _split_sources(count, label, len(pal)), weights, floor,
                            split=True, near_cap=_near_cap(k), spread=spread)
        options = [m for m in (table.best(), splits.best()) if m is not None]
        if not options:
            if spread >= 255 or not len(splits.entries):
                raise AssertionError("no colour can be added: every palette colour holds one pixel")
            spread, splits = min(2 * spread, 255), None
            continue
        _, e, m, target = min(options, key=lambda option: option[0])
        source, raised = label[e], vertex_cost(target) > vertex_cost(pal).max()
        pal = np.vstack([pal, target.astype(np.uint8)])
        whole = m == count[e]
        if whole:
            label[e] = len(pal) - 1
            left = np.flatnonzero(label == source)
        else:
            colour, count, label = (np.append(colour, colour[e]), np.append(count, m),
                                    np.append(label, len(pal) - 1))
            count[e] -= m
            left = np.empty(0, dtype=np.int64)  # the source keeps entry e itself
        table = None if raised else table.patch(e, target, left)
        # A raised max cost changes every candidate's cost: built again. A single pixel split
        # off leaves every source in place; a whole entry moved changes its own column only,
        # and a larger split adds an entry (its pixels at the new colour), which may become a
        # source, as sources may leave (their columns kept, new ones computed: reindex).
        if raised or splits is None:
            splits = None
        elif whole or m > 1:
            splits = splits.reindex(_split_sources(count, label, len(pal)), e if whole else -1, hist, colour, pal,
                                    count, label)
        else:
            splits = splits.recount(count, label, target)
    return pal, *_main_and_splits(hist.n_colors, colour, count, label)


def _split_sources(count, label, n_palette):
    """The entries a split may take pixels from: those whose palette colour holds another
    pixel, the :data:`_SPLIT_SOURCES` largest."""
    size = np.bincount(label, weights=count, minlength=n_palette)
    sources = np.flatnonzero(size[label] >= 2)
    if len(sources) > _SPLIT_SOURCES:  # those of at least the 64th largest count, ties kept, then sorted
        counts = count[sources]
        sources = sources[counts >= np.partition(counts, len(counts) - _SPLIT_SOURCES)[len(counts) - _SPLIT_SOURCES]]
    return sources[np.argsort(-count[sources], kind="stable")[:_SPLIT_SOURCES]]


_BATCH_CAP = 8.0  # the batch's largest max cost (k = 256 colours near one vertex need about 8)
_BATCH_SOURCES = 16  # the cheapest source colours kept per candidate colour
_BATCH_MAX_SOURCES = 1 << 14  # histogram colours that may give pixels (bounds the batch's time)


def _batch_split_up(hist, pal, labels, k, weights):
    """All the missing colours at once: the uint8 colours within the max cost whose first pixel
    costs least, under the max cost (a lattice radius up to :data:`_BATCH_CAP`) where their sum
    plus the max-cost term is least.

    The greedy of :func:`_split_up` adds one colour at a time under the max cost it has reached,
    so when many colours are missing (a dark image at k = 256 wants one colour, black) it spends
    them on single pixels sent to other vertices, long before raising the max cost a little
    would have paid. Here each candidate colour takes one pixel (or, where the pixel gains by
    it, every pixel its palette colour can spare) of the histogram colour that pays least for it,
    each source used while its palette colour keeps a pixel.
    """
    missing, base = k - len(pal), float(vertex_cost(pal).max())
    labels = np.asarray(labels, dtype=np.int64)
    out = labels.copy()  # labels keeps each colour's palette colour (its spare), out the result
    cands = lattice.colors_within(max(_BATCH_CAP, lattice.kth_smallest_cost(k)))
    cands = cands[~np.isin(pack_rgb(cands), pack_rgb(pal))]
    rows = np.sort(np.argsort(-hist.counts, kind="stable")[:_BATCH_MAX_SOURCES])  # on a large image, its most frequent colours
    finder = _CheapestRows(hist.colors[rows], _objective_rows(hist.colors[rows], pal[labels[rows]], weights), weights)
    delta, source = _cheapest_sources(finder, rows, cands, np.ones(len(rows), dtype=bool))
    costs = vertex_cost(cands)
    best = (np.inf, 0.0)
    for radius in lattice.radii(float(costs.max())):
        within = np.sort(delta[costs <= radius + 1e-9, 0])
        if len(within) >= missing:
            best = min(best, (weights.max_cost * max(radius, base) + within[:missing].sum() / hist.n_pixels, radius))
    within = np.flatnonzero(costs <= best[1] + 1e-9)
    count = hist.counts.astype(np.int64).copy()
    spare = np.bincount(labels, weights=hist.counts, minlength=len(pal)).astype(np.int64) - 1
    heap = [(float(delta[c, 0]), int(c), 0) for c in within]
    heapq.heapify(heap)
    new_colours, moves = [], []
    while heap and len(new_colours) < missing:  # lazy greedy: a spent source moves its candidate on
        d, c, j = heapq.heappop(heap)
        i = source[c, j]
        if not np.isfinite(d):
            break
        if count[i] > 0 and spare[labels[i]] > 0:
            m = int(min(count[i], spare[labels[i]])) if d < 0 else 1
            count[i] -= m
            spare[labels[i]] -= m
            if m == hist.counts[i]:  # the whole colour moves: its label, not a split
                out[i] = len(pal) + len(new_colours)
            else:
                moves.append((int(i), len(pal) + len(new_colours), m))
            new_colours.append(cands[c])
            continue
        if j + 1 == delta.shape[1]:  # its list spent: its cheapest sources among those left
            usable = (count[rows] > 0) & (spare[labels[rows]] > 0)
            delta[c], source[c] = (x[0] for x in _cheapest_sources(finder, rows, cands[c:c + 1], usable))
            j = -1
        heapq.heappush(heap, (float(delta[c, j + 1]), c, j + 1))
    if len(new_colours) < missing:  # every source spent: the greedy's results stand
        return None
    pal = np.vstack([pal, np.array(new_colours, dtype=np.uint8)])
    return pal, out, tuple(moves)


def _cheapest_sources(finder, rows, cands, usable):
    """Per candidate colour, the per-pixel score changes of its :data:`_BATCH_SOURCES` cheapest
    ``usable`` source colours (``finder``'s rows, histogram colours ``rows``), ascending, and
    those histogram colours: ((m, s) float64, (m, s) int64; inf where there are fewer)."""
    delta = np.full((len(cands), _BATCH_SOURCES), np.inf)
    source = np.zeros((len(cands), _BATCH_SOURCES), dtype=np.int64)
    found, at = finder.cheapest(cands, _BATCH_SOURCES, usable)
    delta[:, : found.shape[1]], source[:, : found.shape[1]] = found, rows[at]
    return delta, source


class _CheapestRows:
    """Which rows of ``colors`` change their per-pixel objective least by taking a candidate
    colour instead of their current objective ``now``.

    For a candidate ``c`` the change is ``w_mse/3 * (||p - c||^2 - a_p) + w_mean * cost(c)`` with
    ``a_p = now_p / (w_mse/3)``: rows rank by ``s_c(p) = ||p - c||^2 - a_p``. Candidates go in
    groups of :attr:`_GROUP` around their nearest vertex ``v`` (the colours a split adds lie near
    vertices), in order of distance from it, ``r`` the group's largest ``||c - v||``; with
    ``d_p = ||p - v||`` every ``s_c(p)`` lies between ``max(d_p - r, 0)^2 - a_p`` and
    ``(d_p + r)^2 - a_p``. The keep-th least upper bound among the usable rows bounds each
    candidate's keep-th least ``s_c``, so a row whose lower bound is above it is nobody's
    choice; the rows left get the exact table of changes. (A k-d tree
    over lifted rows did the same in 0.4 ms a query on a dark photo, whose pixels are all far
    from the candidates of the other vertices, and its import cost 0.7 s.)
    """

    _BLOCK = 1 << 20  # candidates x rows per exact table
    _GROUP = 64  # candidates per group

    def __init__(self, colors: np.ndarray, now: np.ndarray, weights: Weights):
        self.points, self.now, self.weights = colors.astype(np.float64), now, weights
        if weights.pixel_mse > 0:
            self.lifted = now / weights.pixel_mse
            self.sq = np.einsum("ij,ij->i", self.points, self.points)
            self._to_vertex = {}
        else:  # no distance term: the rows that pay most now are every candidate's cheapest
            self.paying = np.argsort(-now, kind="stable")

    def _vertex_distance(self, v: int) -> np.ndarray:
        """Every row's distance to vertex ``v`` (computed once per vertex)."""
        if v not in self._to_vertex:
            self._to_vertex[v] = np.sqrt(((self.points - lattice.VERTICES[v]) ** 2).sum(1))
        return self._to_vertex[v]

    def _groups(self, cands: np.ndarray, rows: np.ndarray, keep: int):
        """(candidate indices, the rows that may be among their ``keep`` cheapest) per group."""
        vertex, radius = (cands > 127) @ np.array([4, 2, 1]), vertex_cost(cands)  # lattice.VERTICES' order
        order = np.lexsort((radius, vertex))
        a = self.lifted[rows]
        for v in np.unique(vertex):
            of_v = order[vertex[order] == v]
            d = self._vertex_distance(int(v))[rows]
            for s in range(0, len(of_v), self._GROUP):
                group = of_v[s : s + self._GROUP]
                r = float(radius[group].max())
                upper = np.partition((d + r) ** 2 - a, keep - 1)[keep - 1]
                lower = np.maximum(d - r, 0.0) ** 2 - a
                yield group, rows[lower <= upper + 1e-9 * (1.0 + abs(upper))]

    def _best_rows(self, cands: np.ndarray, rows: np.ndarray, keep: int) -> np.ndarray:
        """Each candidate's ``keep`` rows of least ``s_c`` among ``rows`` (m, keep)."""
        at = np.empty((len(cands), keep), dtype=np.int64)
        c = cands.astype(np.float64)
        for group, kept in self._groups(cands, rows, keep):
            step = max(1, self._BLOCK // len(kept))
            for s in range(0, len(group), step):
                part = group[s : s + step]
                s_c = (self.sq[kept] - self.lifted[kept])[None] - 2.0 * (c[part] @ self.points[kept].T)
                at[part] = kept[np.argpartition(s_c, keep - 1, axis=1)[:, :keep]] if keep < len(kept) else kept
        return at

    def cheapest(self, cands: np.ndarray, keep: int, usable: np.ndarray | None = None):
        """Per candidate, the changes of its ``keep`` cheapest ``usable`` rows (all rows if None),
        ascending, and those rows: ((m, keep') float64 and int64, keep' = min(keep, rows); inf
        where fewer rows are usable)."""
        keep = min(keep, len(self.points))
        change = np.full((len(cands), keep), np.inf)
        at = np.zeros((len(cands), keep), dtype=np.int64)
        rows = np.arange(len(self.points)) if usable is None else np.flatnonzero(usable)
        n = min(keep, len(rows))
        if not len(cands) or not n:
            return change, at
        if self.weights.pixel_mse > 0:
            found = np.sort(self._best_rows(cands, rows, n), axis=1)  # ties: the lower row first
        else:
            found = np.broadcast_to(self.paying[np.isin(self.paying, rows)][:n], (len(cands), n))
        exact = _objective_rows(self.points[found], cands[:, None, :], self.weights) - self.now[found]
        order = np.argsort(exact, axis=1, kind="stable")
        change[:, :n], at[:, :n] = np.take_along_axis(exact, order, 1), np.take_along_axis(found, order, 1)
        return change, at


# Up to this max cost, a split may also send a pixel to any uint8 colour within it, at any vertex
# (few of them): on a black-and-white image the cheapest extra colours are often single pixels at
# the other vertices, not colours near black or white that would raise the max cost.
_NEAR_CAP = 4.0


def _near_cap(k: int) -> float:
    """:data:`_NEAR_CAP`, or more where k colours need a larger max cost (k = 256 needs 3.2)."""
    return max(_NEAR_CAP, 2.0 * lattice.kth_smallest_cost(k))


class _Moves:
    """The exact score change of every candidate move of pixels of ``entries`` to a new colour."""

    COLUMNS = ("cands", "keys", "valid", "per_pixel", "raise_cost")  # one column per entry (_columns)

    def __init__(self, hist, pal, colour, count, label, entries, weights, floor, *, split=False, near_cap=_NEAR_CAP,
                 spread=3):
        self.entries, self.split, self.weights, self.n_pixels = entries, split, weights, hist.n_pixels
        self.floor = max(float(vertex_cost(pal).max()), floor)  # raising the max cost up to it is free
        self.offsets = _reach(spread) if split else _STEPS
        # splits also go to any colour within the max cost (see _NEAR_CAP)
        self.near = lattice.colors_within(self.floor) if split and self.floor <= near_cap else np.empty((0, 3), int)
        for name, array in zip(self.COLUMNS, self._columns(hist.colors[colour[entries]], pal[label[entries]], pal)):
            setattr(self, name, array)
        if split:
            self.recount(count, label)
        else:
            self.moved = np.broadcast_to(count[entries][None].astype(np.float64), self.per_pixel.shape)
            self._score()

    def _columns(self, p, q, pal):
        """Candidates, their keys, validity, per-pixel score change and max-cost term for
        entries of colours ``p`` now taking palette colours ``q`` (one column each)."""
        p, q = p.astype(np.int64), q.astype(np.int64)
        cands = q[None] + self.offsets[:, None, :]
        if not self.split:
            cands = np.concatenate([p[None], cands])
        else:
            cands = np.concatenate([cands, np.broadcast_to(self.near[:, None, :], (len(self.near), len(p), 3))])
        valid = np.all((cands >= 0) & (cands <= 255), axis=2)
        keys = pack_rgb(np.clip(cands, 0, 255))
        valid &= ~np.isin(keys, pack_rgb(pal))
        per_pixel = _objective_rows(p[None], cands, self.weights) - _objective_rows(p, q, self.weights)[None]
        raise_cost = self.weights.max_cost * np.maximum(vertex_cost(cands) - self.floor, 0.0)
        return cands, keys, valid, per_pixel, raise_cost

    def reindex(self, entries, moved, hist, colour, pal, count, label):
        """Splits over ``entries`` (the sources a new table would take) after entry ``moved``
        went whole to the newest palette colour (-1: none did, pixels were split off into a
        new entry): the columns of the other entries kept (their colours and palette colours
        are unchanged), the rest computed as a new table would."""
        known = {int(e): i for i, e in enumerate(self.entries) if e != moved}
        at = np.array([known.get(int(e), -1) for e in entries], dtype=np.int64)
        kept, fresh = np.flatnonzero(at >= 0), np.flatnonzero(at < 0)
        columns = self._columns(hist.colors[colour[entries[fresh]]], pal[label[entries[fresh]]], pal)
        in_place = len(entries) == len(self.entries) and (at[kept] == kept).all()  # the usual case
        for name, column in zip(self.COLUMNS, columns):
            array = getattr(self, name)
            if in_place:
                array[:, fresh] = column
                continue
            out = np.empty((array.shape[0], len(entries)) + array.shape[2:], dtype=array.dtype)
            out[:, kept], out[:, fresh] = array[:, at[kept]], column
            setattr(self, name, out)
        self.entries = entries
        return self.recount(count, label, pal[-1])

    def _score(self):
        self.delta = self.per_pixel * self.moved / self.n_pixels + self.raise_cost
        self.delta[~self.valid] = np.inf

    def recount(self, count, label, taken=None):
        """Splits: one pixel if moving costs, else all the pixels its palette colour can spare,
        after the pixel counts changed (and colour ``taken`` joined the palette); the per-pixel
        terms stay, so a split costs a few array operations instead of a new table."""
        if taken is not None:
            self.valid &= self.keys != pack_rgb(taken)
        spare = np.minimum(count[self.entries], np.bincount(label, weights=count)[label[self.entries]] - 1)
        self.moved = np.where(self.per_pixel < 0, spare[None], 1.0)
        self._score()
        self.delta[:, spare < 1] = np.inf
        return self

    def best(self):
        """(score change, entry, pixels moved, new colour) of the cheapest valid move, or None."""
        if self.delta.size == 0:
            return None
        which, pos = np.unravel_index(np.argmin(self.delta), self.delta.shape)
        if not np.isfinite(self.delta[which, pos]):
            return None
        return (float(self.delta[which, pos]), int(self.entries[pos]), int(self.moved[which, pos]),
                self.cands[which, pos].copy())  # a copy: reindex may write the table in place

    def patch(self, moved_entry, new_colour, left_in_source):
        """After a whole-entry move: that entry, and the source's last entry, can no longer
        move, and no candidate may take the new colour."""
        fixed = [moved_entry] + ([int(left_in_source[0])] if len(left_in_source) == 1 else [])
        self.delta[:, np.isin(self.entries, fixed)] = np.inf
        self.delta[self.keys == pack_rgb(new_colour)] = np.inf
        return self


def _objective_rows(colors: np.ndarray, targets: np.ndarray, weights: Weights) -> np.ndarray:
    """Per-pixel objective of ``colors`` taking ``targets`` (broadcast over leading axes)."""
    d = colors.astype(np.float64) - targets
    return weights.pixel_mse * np.einsum("...i,...i->...", d, d) + weights.mean_cost * vertex_cost(targets)


def _main_and_splits(n_colors, colour, count, label):
    """Labels per histogram colour (its first entry) and the other entries as splits."""
    main = label[:n_colors].copy()
    extra = [(int(c), int(lab), int(m)) for c, lab, m in
             zip(colour[n_colors:], label[n_colors:], count[n_colors:])]
    return main, tuple(extra)


def _check(q: Quantization, hist: ColorHistogram, k: int) -> None:
    """Exactly k distinct palette colours, each used by at least one pixel."""
    _, counts, labels = q.entries(hist)
    n_distinct = len(np.unique(pack_rgb(q.palette)))
    n_used = len(np.unique(labels[counts > 0]))
    if not (len(q.palette) == n_distinct == n_used == k) or counts.min() < 0:
        raise AssertionError(f"finalisation produced {n_distinct} distinct / {n_used} used colours, not {k}")
