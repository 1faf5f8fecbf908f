"""Exactly-k finalisation: merged, unused and surplus colours are repaired at least cost."""

import numpy as np
import pytest
import skimage.data
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cq.finalize
from cq.finalize import TooFewPixelsError, _CheapestRows, _Moves, _objective_rows, _split_sources, assign, finalize
from cq.histogram import ColorHistogram, pack_rgb
from cq.objective import Weights, score, score_assignment, vertex_cost


@pytest.fixture(scope="module")
def hist():
    return ColorHistogram.from_image(skimage.data.chelsea()[::3, ::3])


def distinct_used(hist, q):
    return len(np.unique(pack_rgb(q.render(hist).reshape(-1, 3))))


def test_duplicates_after_rounding_are_repaired(hist):
    palette = np.repeat(np.array([[10.2, 20.4, 30.1], [10.4, 19.6, 29.9]]), [1, 1], axis=0)
    rng = np.random.default_rng(0)
    palette = np.vstack([palette, rng.uniform(0, 255, (35, 3))])  # 37 proposed, 2 round equal
    q = finalize(hist, palette, k=37)
    assert distinct_used(hist, q) == 37 and len(q.palette) == 37


def test_unused_colours_are_replaced(hist):
    palette = np.vstack([hist.colors[::1000][:30], np.full((7, 3), 255.0)])  # 7 far, likely unused
    q = finalize(hist, palette, k=37)
    assert distinct_used(hist, q) == 37
    assert any("added" in n for n in q.notes)


def test_too_many_colours_are_merged_cheaply(hist):
    rng = np.random.default_rng(1)
    palette = hist.colors[rng.choice(hist.n_colors, 45, replace=False)].astype(float)
    q = finalize(hist, palette, k=37, rule="objective")
    assert distinct_used(hist, q) == 37


def test_given_labels_are_kept(hist):
    palette = hist.colors[:37].astype(float)
    labels = assign(hist, palette)
    q = finalize(hist, palette, labels, k=37)
    assert np.array_equal(q.palette[q.labels], np.clip(np.rint(palette), 0, 255).astype(np.uint8)[labels])


def test_fewer_than_k_pixels_is_refused():
    image = np.array([[[0, 0, 0], [9, 9, 9], [200, 1, 3]]], np.uint8)
    with pytest.raises(TooFewPixelsError, match="3 pixels, fewer than the k=37"):
        finalize(ColorHistogram.from_image(image), np.zeros((37, 3)), k=37)


@pytest.mark.parametrize("n_colors", [1, 5, 21, 36])
def test_fewer_than_k_colours_still_give_exactly_k(n_colors):
    """Pixels of one colour are split between outputs; the split is scored exactly."""
    rng = np.random.default_rng(n_colors)
    colors = rng.integers(0, 256, (n_colors, 3), dtype=np.uint8)
    image = colors[rng.integers(0, n_colors, (20, 30))]
    image.reshape(-1, 3)[:n_colors] = colors  # every colour present
    h = ColorHistogram.from_image(image)
    q = finalize(h, h.colors.astype(float), k=37)
    rendered = q.render(h)
    assert distinct_used(h, q) == 37 and len(q.palette) == 37 and q.splits
    assert q.score(h).score == pytest.approx(score(image, rendered).score, rel=1e-12)


def test_splits_never_cost_more_than_a_pixel_each():
    """A 21-colour image kept on its own colours: each of the 16 added colours costs at most one
    pixel's move to a lattice neighbour (moves that lower the score may take many pixels),
    and the max cost does not rise."""
    rng = np.random.default_rng(3)
    colors = rng.integers(0, 256, (21, 3), dtype=np.uint8)
    image = colors[rng.integers(0, 21, (200, 300))]
    h = ColorHistogram.from_image(image)
    kept = score_assignment(h, h.colors, np.arange(h.n_colors))
    q = finalize(h, h.colors.astype(float), np.arange(h.n_colors), k=37)
    assert len(q.splits) == 16
    assert q.score(h).max_cost <= kept.max_cost
    assert q.score(h).score - kept.score < 16 * (2 / 3 * 3 * 3**2 + 42 * 3) / h.n_pixels


@pytest.mark.parametrize("n", [37, 38])
def test_exactly_k_and_k_plus_one_colours(n):
    rng = np.random.default_rng(n)
    colors = rng.choice(1 << 24, n, replace=False)
    image = np.stack([(colors >> 16) & 255, (colors >> 8) & 255, colors & 255], -1).astype(np.uint8)
    image = np.repeat(image[None], 3, axis=0)
    h = ColorHistogram.from_image(image)
    q = finalize(h, np.full((1, 3), 128.0), k=37)  # one proposed colour: 36 must be added
    assert distinct_used(h, q) == 37


def test_added_colour_is_the_cheapest_candidate():
    """Light grey on a black palette: white costs its pixel (2/3)*3*5**2 = 50 and no colour cost,
    its own grey 42*8.7 more and a max cost of 8.7: the cheaper white is chosen."""
    image = np.array([[[250, 250, 250], [5, 5, 5], [5, 5, 5]]], np.uint8)
    h = ColorHistogram.from_image(image)
    q = finalize(h, np.array([[0.0, 0.0, 0.0]]), k=2, rule="nearest")
    assert sorted(map(tuple, q.palette.tolist())) == [(0, 0, 0), (255, 255, 255)]
    own = score_assignment(h, np.array([[0, 0, 0], [250, 250, 250]], np.uint8), np.array([0, 1]))
    assert q.score(h).score < own.score

def test_extra_colours_do_not_raise_the_max_cost_of_a_near_white_image():
    """20 light greys on white, all proposed as white: the 36 added colours are lattice colours
    near the vertices (max cost a few units), not the greys' own colours (max cost ~39)."""
    image = np.full((100, 160, 3), 255, np.uint8)
    greys = 255 - np.random.default_rng(1).integers(0, 40, (20, 3))
    for i, c in enumerate(greys):
        image[5 * i:5 * i + 3, 20:120] = c
    h = ColorHistogram.from_image(image)
    q = finalize(h, np.array([[255.0, 255.0, 255.0]]), np.zeros(h.n_colors, int), k=37)
    s = q.score(h)
    assert s.n_colors == 37 and s.max_cost < 5


def test_more_than_k_used_colours_are_merged_where_it_costs_least(hist):
    """45 used colours (labels given, none empty) must lose 8: the merge beats dropping the 8
    least used colours and reassigning their pixels to their best remaining colour."""
    rng = np.random.default_rng(4)
    palette = hist.colors[rng.choice(hist.n_colors, 45, replace=False)]
    labels = assign(hist, palette)  # nearest: each colour at least takes its own pixels
    assert len(np.unique(labels)) == len(palette) == 45
    q = finalize(hist, palette, labels, k=37)
    assert distinct_used(hist, q) == 37 and f"merged {len(palette) - 37} colours" in q.notes
    keep = np.sort(np.argsort(-np.bincount(labels, weights=hist.counts))[:37])
    naive = np.searchsorted(keep, labels)
    dropped = ~np.isin(labels, keep)  # only these pixels move, as in the merge
    naive[dropped] = assign(ColorHistogram(hist.colors[dropped], hist.counts[dropped]), palette[keep],
                            rule="objective")
    assert q.score(hist).score <= score_assignment(hist, palette[keep], naive).score


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**16), st.integers(2, 12), st.integers(0, 10**6), st.booleans())
def test_split_table_after_a_move_equals_a_new_one(seed, n_palette, pick, whole):
    """The greedy keeps its split table (``_Moves.reindex``) across a move of a whole entry, and
    across pixels split off into a new entry (the dark images at k = 256 rebuilt it ~1,000
    times); the oracle is a table built from scratch on the state after the move."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (1, 3)) + rng.integers(-6, 7, (24, 30, 3)) * rng.integers(0, 2, (24, 30, 1))
    hist = ColorHistogram.from_image(np.clip(image, 0, 255).astype(np.uint8))
    pal = hist.colors[rng.choice(hist.n_colors, min(n_palette, hist.n_colors), replace=False)]
    colour, count = np.arange(hist.n_colors), hist.counts.astype(np.int64)
    label = assign(hist, pal, Weights()).astype(np.int64)
    floor, near_cap = float(vertex_cost(pal).max()), 8.0
    size = np.bincount(label, weights=count, minlength=len(pal))
    # A whole move leaves its palette colour a pixel; a split leaves one in the entry too.
    movable = np.flatnonzero(size[label] > count) if whole else np.flatnonzero((size[label] > 2) & (count >= 2))
    targets = [c for c in hist.colors if vertex_cost(c) <= floor and not (pal == c).all(1).any()]
    assume(len(movable) and targets)
    splits = _Moves(hist, pal, colour, count, label, _split_sources(count, label, len(pal)), Weights(), floor,
                    split=True, near_cap=near_cap)
    e, target = int(movable[pick % len(movable)]), targets[pick % len(targets)]
    pal, label = np.vstack([pal, target]), label.copy()
    if whole:
        label[e] = len(pal) - 1
    else:
        m = 1 + pick % int(min(count[e] - 1, size[label[e]] - 1))
        colour, count, label = np.append(colour, colour[e]), np.append(count, m), np.append(label, len(pal) - 1)
        count[e] -= m
    sources = _split_sources(count, label, len(pal))
    kept = splits.reindex(sources, e if whole else -1, hist, colour, pal, count, label)
    new = _Moves(hist, pal, colour, count, label, sources, Weights(), floor, split=True, near_cap=near_cap)
    for name in ("entries", "cands", "keys", "valid", "per_pixel", "raise_cost", "moved", "delta"):
        np.testing.assert_array_equal(getattr(kept, name), getattr(new, name), err_msg=name)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**16), st.integers(1, 20), st.floats(0.0, 1.0), st.sampled_from([Weights(), Weights(0.0, 21.0, 42.0)]))
def test_cheapest_rows_among_usable_ones_match_every_change(seed, keep, share, weights):
    """The batch split's source finder (one k-d tree, asked for more neighbours when rows are
    spent) gives, per candidate, the ``keep`` least changes among the usable rows, as the whole
    (rows x candidates) table of changes does."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    colors = rng.integers(0, 256, (n, 3))
    if n > 2:
        colors[: n // 3] = colors[0]  # equal rows: ties among the changes
    now = _objective_rows(colors, rng.integers(0, 256, (n, 3)).astype(np.float64), weights)
    cands = rng.integers(0, 256, (int(rng.integers(1, 12)), 3))
    usable = rng.random(n) < share
    found, rows = _CheapestRows(colors, now, weights).cheapest(cands, keep, usable)
    table = _objective_rows(colors[None], cands[:, None, :], weights) - now[None]
    expected = np.sort(np.where(usable[None], table, np.inf), axis=1)[:, : min(keep, n)]
    np.testing.assert_allclose(found, expected, rtol=1e-9, atol=1e-6)
    finite = np.isfinite(found)
    assert usable[rows[finite]].all()
    np.testing.assert_allclose(table[np.nonzero(finite)[0], rows[finite]], found[finite], rtol=1e-12, atol=1e-9)


def test_finalising_the_same_proposal_again_gives_the_same_result_untouched_by_its_caller():
    """The splits of the last call are kept (direct finalises its winner, then the pipeline
    again): the second result equals the first even when the caller changed the first's arrays,
    and another histogram with the same palette and labels gets its own."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (5, 3), dtype=np.uint8)[rng.integers(0, 5, (20, 30))]
    h = ColorHistogram.from_image(image)
    first = finalize(h, h.colors.astype(float), np.arange(h.n_colors), k=37)
    expected = (first.palette.copy(), first.labels.copy(), first.splits)
    first.palette[:] = 0
    first.labels[:] = 0
    again = finalize(h, h.colors.astype(float), np.arange(h.n_colors), k=37)
    assert (again.palette == expected[0]).all() and (again.labels == expected[1]).all() and again.splits == expected[2]
    other = ColorHistogram(h.colors, rng.integers(1, 200, h.n_colors))  # same colours, other counts
    with_h_kept = finalize(other, other.colors.astype(float), np.arange(other.n_colors), k=37)
    cq.finalize._last_split_up.clear()
    fresh = finalize(other, other.colors.astype(float), np.arange(other.n_colors), k=37)
    assert (with_h_kept.palette == fresh.palette).all() and with_h_kept.splits == fresh.splits

