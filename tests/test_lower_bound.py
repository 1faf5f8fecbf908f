"""The lower bound: right on hand-computed cases, equal to a brute-force minimum over the cap,
and never above the score of any quantization (random palettes and every cheap method)."""

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cq.finalize import assign, finalize
from cq.histogram import ColorHistogram
from cq.methods import Problem, get_method
from cq.objective import Weights, lower_bound, score, score_assignment, vertex_cost

K = 37
METHODS = ["kmeans", "median_cut", "octree", "libimagequant", "direct"]


def single_colour(rgb, shape=(4, 5)) -> ColorHistogram:
    return ColorHistogram.from_image(np.full((*shape, 3), rgb, dtype=np.uint8))


def small_photo(name: str, width: int = 96) -> np.ndarray:
    image = getattr(data, name)()[..., :3]
    height = round(image.shape[0] * width / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def test_single_colour_far_from_its_vertex():
    """D = 60 from black: the cap's slope 21 + 42 - (4/3)(D - T) vanishes at T = D - 47.25 = 12.75,
    so the bound is 63*12.75 + (2/3)*47.25^2 = 803.25 + 1488.375."""
    assert lower_bound(single_colour((0, 0, 60))) == pytest.approx(2291.625, abs=1e-6)


def test_single_colour_near_its_vertex():
    """D = 30 < 47.25: the cap stays 0 and the pixel pays (2/3)*30^2 = 600 to sit on the vertex."""
    assert lower_bound(single_colour((255, 225, 255))) == pytest.approx(600.0, abs=1e-6)


def test_vertex_colour_costs_nothing():
    assert lower_bound(single_colour((255, 0, 255))) == pytest.approx(0.0, abs=1e-9)


def test_matches_a_brute_force_minimum_over_the_cap():
    """An independent evaluation of the bound's formula on a fine grid of caps, then refined."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    hist = ColorHistogram.from_image(image)
    dist = vertex_cost(hist.colors)
    weights = Weights()

    def total(cap):
        r = np.clip(dist - 31.5, 0.0, cap)
        return 21 * cap + np.average((2 / 3) * (dist - r) ** 2 + 42 * r, weights=hist.counts)

    caps = np.linspace(0, dist.max(), 20001)
    best = caps[np.argmin([total(c) for c in caps])]
    fine = np.linspace(max(best - 0.05, 0), best + 0.05, 2001)
    assert lower_bound(hist, weights) == pytest.approx(min(total(c) for c in fine), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_random_palettes_never_beat_the_bound(seed):
    """Random images, random palettes, both assignment rules: the score stays above the bound."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    if seed % 2:  # a clustered image too, whose colours sit near the vertices
        near_vertices = np.where(image > 127, 255, 0) + rng.normal(0, 25, image.shape)
        image = np.clip(near_vertices, 0, 255).astype(np.uint8)
    hist = ColorHistogram.from_image(image)
    bound = lower_bound(hist)
    for _ in range(20):
        palette = rng.integers(0, 256, size=(K, 3)).astype(np.uint8)
        for rule in ("nearest", "objective"):
            labels = assign(hist, palette, Weights(), rule)
            assert score_assignment(hist, palette, labels).score >= bound


@pytest.mark.parametrize("name", ["astronaut", "coffee", "hubble_deep_field", "immunohistochemistry"])
def test_no_method_beats_the_bound_on_photos(name):
    image = small_photo(name)
    hist = ColorHistogram.from_image(image)
    bound = lower_bound(hist)
    for method_name in METHODS:
        method = get_method(method_name)
        if method.unavailable_reason():
            continue
        proposal = method.fn(Problem(image, hist, K), **method.defaults)
        q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
        gap = score(image, q.render(hist)).score / bound - 1
        assert gap >= 0, (method_name, gap)


def test_no_method_beats_the_bound_on_random_images():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    hist = ColorHistogram.from_image(image)
    for method_name in ("kmeans", "direct"):
        method = get_method(method_name)
        proposal = method.fn(Problem(image, hist, K), **method.defaults)
        q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
        assert score(image, q.render(hist)).score >= lower_bound(hist)
