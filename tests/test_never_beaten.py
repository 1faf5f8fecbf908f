"""direct is never beaten: on generated images of every kind, no baseline scores lower, cnn not
by more than 0.1%, and (but on flat blocks) direct is within 2% of the k-aware bound.

The oracle scores the rendered images itself, in float64, straight from docs/objective.md (not
``cq.objective``). Hypothesis draws (kind, seed, k); each kind's builder turns the seed into an
image. The default run uses the fast profile (a few derandomised examples, no database); the long
one (``CQ_NEVER_BEATEN=long``, run by ``bench/never_beaten.py``) draws many. Every failure found
stays below as an ``@example``.
"""

from __future__ import annotations

import io
import os
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from cq.bound import lower_bound as k_aware_bound
from cq.finalize import finalize
from cq.histogram import ColorHistogram
from cq.imageio import load_image
from cq.methods import Problem, get_method

KS = (2, 16, 37, 64, 256)
BASELINES = ("kmeans", "median_cut", "octree", "libimagequant")
BOUND_SLACK = 1.02  # direct / k-aware bound, on every kind but flat blocks, for k >= BOUND_K
# With k = 2 the bound is out of reach: it lets every pixel take a colour at its own nearest
# vertex, while two colours serve at most two of the (up to 8) vertices that an image's pixels are
# nearest to; the others pay their distance to a far vertex (text_ui 388: bound 5124, best 7916).
BOUND_K = 16
CNN_SLACK = 1.001
VERTICES = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])
PROFILES = {
    "fast": settings(max_examples=4, deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(HealthCheck)),
    "long": settings(max_examples=400, deadline=None, database=None, suppress_health_check=list(HealthCheck)),
}
PROFILE = PROFILES[os.environ.get("CQ_NEVER_BEATEN", "fast")]


# --- the oracle: docs/objective.md, written out again -----------------------------------------

def oracle_score(original: np.ndarray, quantized: np.ndarray) -> float:
    """2*MSE + 21*max_cost + 42*mean_cost of a quantized image, float64, pixel by pixel."""
    i = original.reshape(-1, 3).astype(np.float64)
    q = quantized.reshape(-1, 3).astype(np.float64)
    mse = np.mean((i - q) ** 2)
    corners = VERTICES.astype(np.float64)
    cost = np.sqrt(((q[:, None, :] - corners[None]) ** 2).sum(2)).min(1)
    return 2.0 * mse + 21.0 * cost.max() + 42.0 * cost.mean()


def quantized(method: str, image: np.ndarray, k: int, **params) -> np.ndarray:
    """The method's result as the pipeline writes it (finalised to exactly k colours), checked."""
    hist = ColorHistogram.from_image(image)
    m = get_method(method)
    proposal = m.fn(Problem(image, hist, k), **{**m.defaults, **params})
    out = finalize(hist, proposal.palette, proposal.labels, k=k, rule=proposal.rule).render(hist)
    assert len(np.unique(out.reshape(-1, 3), axis=0)) == k
    return out


# --- the image kinds: seed and k -> image ------------------------------------------------------

def _shuffled(colors: np.ndarray, counts: np.ndarray, rng, width: int) -> np.ndarray:
    """An image holding ``counts[i]`` pixels of ``colors[i]``, shuffled, ``width`` wide (the last
    row padded with the first colour)."""
    pixels = np.repeat(colors, counts, axis=0)
    pad = -len(pixels) % width
    pixels = np.concatenate([pixels, np.repeat(colors[:1], pad, axis=0)])
    return rng.permutation(pixels).reshape(-1, width, 3).astype(np.uint8)


def near_corner(rng, k):
    """k+1 to k+200 colours within a few units (per channel) of one of the 8 corners, mostly the corner."""
    corner = VERTICES[rng.integers(8)]
    n = k + int(rng.integers(1, 201))
    spread = int(np.ceil(n ** (1 / 3))) + int(rng.integers(0, 3))
    grid = np.stack(np.meshgrid(*[np.arange(spread + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)[1:]
    offsets = np.vstack([[0, 0, 0], grid[rng.choice(len(grid), n - 1, replace=False)]])
    counts = rng.integers(1, 40, n)
    counts[0] = int(rng.integers(2, 20)) * n
    return _shuffled(np.where(corner > 0, 255 - offsets, offsets), counts, rng, 64)


def few_colours(rng, k):
    """1 to k distinct colours (fewer than k, or exactly k), each on at least one pixel."""
    n = int(rng.integers(1, k + 1)) if rng.random() < 0.7 else k
    colors = rng.integers(0, 256, (n, 3))
    counts = rng.integers(1, 30, n)
    counts[0] += max(0, k - counts.sum())  # at least k pixels
    return _shuffled(colors, counts, rng, 16)


def gradient(rng, k):
    """A smooth 2-D blend of three random colours."""
    a, b, c = rng.integers(0, 256, (3, 3)).astype(np.float64)
    y, x = np.mgrid[0:48, 0:64] / np.array([47.0, 63.0])[:, None, None]
    image = a * (1 - x[..., None]) + b * x[..., None] + (c - a) * y[..., None] * 0.5
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def noise(rng, k):
    """Gaussian noise of a random spread around a random colour."""
    mean, sd = rng.integers(0, 256, 3), float(rng.uniform(2, 90))
    return np.clip(np.rint(rng.normal(mean, sd, (40, 56, 3))), 0, 255).astype(np.uint8)


def _drawn(rng, size, mode="RGB"):
    """Random text, boxes and lines drawn with PIL on a random background (a UI or a page)."""
    background = tuple(int(v) for v in (rng.integers(0, 256, 3) if rng.random() < 0.4
                                        else VERTICES[rng.integers(8)]))
    image = Image.new(mode, size, background + ((255,) if mode == "RGBA" else ()))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 9))):
        fill = tuple(int(v) for v in rng.integers(0, 256, len(mode)))
        x0, y0 = int(rng.integers(0, size[0] - 8)), int(rng.integers(0, size[1] - 8))
        x1, y1 = x0 + int(rng.integers(4, size[0] // 2)), y0 + int(rng.integers(4, size[1] // 2))
        shape = rng.integers(3)
        if shape == 0:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        elif shape == 1:
            draw.line([x0, y0, x1, y1], fill=fill, width=int(rng.integers(1, 4)))
        else:
            draw.text((x0, y0), "Quantize 37", fill=fill)
    return image


def text_ui(rng, k):
    """Rendered text and UI boxes (antialiased text gives in-between colours)."""
    return np.asarray(_drawn(rng, (96, 64)))


def flat_blocks(rng, k):
    """50 to 500 flat blocks of distinct random colours."""
    n = int(rng.integers(50, 501))
    colors = rng.integers(0, 256, (n, 3))
    side = int(np.ceil(np.sqrt(n)))
    cells = colors[np.arange(side * side) % n].reshape(side, side, 3)
    return np.repeat(np.repeat(cells, 3, axis=0), 3, axis=1).astype(np.uint8)


def dark(rng, k):
    """A dark image: a photograph crop or noise scaled into 0..40."""
    base = photo(rng, k) if rng.random() < 0.5 else noise(rng, k)
    return np.rint(base * rng.uniform(0.05, 0.16)).astype(np.uint8)


def alpha(rng, k):
    """Shapes and text with transparency, composited on white by cq's reader."""
    buffer = io.BytesIO()
    image = _drawn(rng, (80, 56), "RGBA")
    image.putalpha(Image.fromarray(rng.integers(0, 256, (56, 80), dtype=np.uint8)).point(lambda a: a // 8))
    image.save(buffer, format="PNG")
    return load_image("alpha.png", data=buffer.getvalue()).pixels


def tiny(rng, k):
    """k to k+10 pixels of random colours (some repeated)."""
    n = k + int(rng.integers(0, 11))
    colors = rng.integers(0, 256, (max(1, n - int(rng.integers(0, 4))), 3))
    return colors[np.resize(np.arange(len(colors)), n)].reshape(1, n, 3).astype(np.uint8)


def photo(rng, k):
    """A crop or a downscale of one of scikit-image's photographs."""
    from skimage import data

    name = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
    image = getattr(data, name[rng.integers(len(name))])()[..., :3]
    if rng.random() < 0.5:
        y, x = rng.integers(0, image.shape[0] - 48), rng.integers(0, image.shape[1] - 64)
        return np.ascontiguousarray(image[y:y + 48, x:x + 64])
    return np.asarray(Image.fromarray(image).resize((64, 48), Image.Resampling.LANCZOS))


KINDS = {f.__name__: f for f in (near_corner, few_colours, gradient, noise, text_ui, flat_blocks, dark, alpha,
                                 tiny, photo)}


class Case(NamedTuple):
    kind: str
    seed: int
    k: int

    def image(self) -> np.ndarray:
        image = KINDS[self.kind](np.random.default_rng(self.seed), self.k)
        assert image.shape[0] * image.shape[1] >= self.k
        return image


CASES = st.builds(Case, st.sampled_from(sorted(KINDS)), st.integers(0, 2**16), st.sampled_from(KS))


def near_white_page() -> np.ndarray:
    """The issue's image: 640x400, 45 colours within 3 of white (an RGBA page composited on white)."""
    rng = np.random.default_rng(17)
    offsets = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    offsets = offsets[rng.choice(len(offsets), 45, replace=False)]
    counts = rng.integers(20, 519, 45)
    counts[np.argmin(offsets.sum(1))] += 640 * 400 - counts.sum()
    return _shuffled(255 - offsets, counts, rng, 640)


# --- the properties ------------------------------------------------------------------------------

@PROFILE
@given(case=CASES)
@example(case=Case("near_corner", 0, 37))  # one example of every kind, then the regressions
@example(case=Case("few_colours", 1, 16))
@example(case=Case("gradient", 2, 64))
@example(case=Case("noise", 3, 2))
@example(case=Case("text_ui", 4, 37))
@example(case=Case("flat_blocks", 5, 37))
@example(case=Case("dark", 6, 256))  # octree 1641 beat direct 1687 (bound 595): finalize's batch of colours
@example(case=Case("dark", 12, 37))
@example(case=Case("dark", 4, 256))  # 45 colours at k=256: 1.60x the bound (748) before the batch, 1.0008x now
@example(case=Case("alpha", 7, 16))
@example(case=Case("tiny", 8, 37))
@example(case=Case("photo", 9, 37))
def test_no_baseline_beats_direct(case):
    image = case.image()
    ours = oracle_score(image, quantized("direct", image, case.k))
    for method in BASELINES:
        theirs = oracle_score(image, quantized(method, image, case.k))
        assert ours <= theirs * (1 + 1e-12), f"{method} {theirs:.4f} beats direct {ours:.4f} on {case}"
    if case.kind != "flat_blocks" and case.k >= BOUND_K:
        bound = k_aware_bound(ColorHistogram.from_image(image), case.k)
        assert ours <= BOUND_SLACK * bound, f"direct {ours:.4f} is {ours / bound:.4f}x the bound on {case}"


def test_direct_finds_colours_beyond_the_taken_neighbourhood():
    """A 56x80 RGBA picture of 115 colours, one of them 4176 pixels, at k = 256: finalisation
    took every colour within 3 units of the large colours and direct raised "no colour can be
    added". It now looks farther, and no baseline beats it. (It ends 1.047x the bound, above
    issue 17's 1.02: whether the result or the bound is loose there is not yet known.)"""
    image = Case("alpha", 9, 256).image()
    ours = oracle_score(image, quantized("direct", image, 256))
    for method in BASELINES:
        theirs = oracle_score(image, quantized(method, image, 256))
        assert ours <= theirs * (1 + 1e-12), f"{method} {theirs:.4f} beats direct {ours:.4f}"


@PROFILE
@given(case=CASES.filter(lambda c: c.k <= 64))  # k = 256 only in the examples: keeps the default run short
@example(case=Case("near_corner", 10, 37))
@example(case=Case("text_ui", 388, 2))  # cnn 8596 beat direct 8692 (4 starts); 7916 with 512 // k**2 starts
@example(case=Case("text_ui", 11, 16))
@example(case=Case("text_ui", 776, 2))  # cnn 8695 beat direct 8789 (32 starts); direct reaches it with 128
def test_cnn_does_not_beat_direct(case):
    """cnn (a short training: its own best epoch still counts) never more than 0.1% below direct."""
    image = case.image()
    ours = oracle_score(image, quantized("direct", image, case.k))
    theirs = oracle_score(image, quantized("cnn", image, case.k, epochs=4, steps_per_epoch=4, device="cpu"))
    assert ours <= CNN_SLACK * theirs, f"cnn {theirs:.4f} beats direct {ours:.4f} on {case}"


def test_cnn_finish_tries_directs_own_colours():
    """text_ui 4 at k = 256 (132 colours): cnn's finish placed only its network's palette and
    ended 2.41x the bound where direct is 1.008x; it now also tries direct's own start."""
    image = Case("text_ui", 4, 256).image()
    bound = k_aware_bound(ColorHistogram.from_image(image), 256)
    cnn = oracle_score(image, quantized("cnn", image, 256, epochs=4, steps_per_epoch=4, device="cpu"))
    assert cnn <= BOUND_SLACK * bound, f"cnn is {cnn / bound:.4f}x the bound"


@pytest.mark.parametrize("corner", range(8))
def test_near_white_page_and_its_cousins_reach_the_bound(corner):
    """The issue's near-white page (direct once scored 12.7x the bound on it), moved to every corner."""
    page = near_white_page()
    image = np.where(VERTICES[corner] > 0, page, 255 - page).astype(np.uint8)
    bound = k_aware_bound(ColorHistogram.from_image(image), 37)
    assert oracle_score(image, quantized("direct", image, 37)) <= 1.005 * bound
