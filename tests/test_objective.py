"""The objective against a literal transcription of the tutorial's numpy functions."""

import numpy as np
import pytest
import skimage.data
from hypothesis import given, settings
from hypothesis import strategies as st

from cq.finalize import finalize
from cq.histogram import ColorHistogram
from cq.methods import Problem, get_method
from cq.objective import Weights, best_cap, score, score_assignment, score_indexed, vertex_cost


# --- the tutorial's functions, transcribed literally: the oracle -------------------------------
def tutorial_mse(img1, img2):
    return np.mean((img1.astype(float) - img2.astype(float)) ** 2)


def tutorial_color_cost(img):
    vertices = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0], [0, 255, 255],
                         [255, 0, 0], [255, 0, 255], [255, 255, 0], [255, 255, 255]])
    pixels = img.reshape(-1, 3)
    distances = np.sqrt(np.sum((pixels[:, None, :] - vertices[None, :, :]) ** 2, axis=2))
    costs = np.min(distances, axis=1)
    return np.mean(costs), np.max(costs)


def tutorial_score(original, quantized):
    mse_value = tutorial_mse(original, quantized)
    mean_cost, max_cost = tutorial_color_cost(quantized)
    return 2 * mse_value + 21 * max_cost + 42 * mean_cost
# -----------------------------------------------------------------------------------------------


def quantized_by(method: str, image: np.ndarray, k: int = 37) -> np.ndarray:
    hist = ColorHistogram.from_image(image)
    proposal = get_method(method).fn(Problem(image, hist, k))
    return finalize(hist, proposal.palette, proposal.labels, k=k, rule=proposal.rule).render(hist)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
@pytest.mark.parametrize("method", ["median_cut", "octree"])
def test_score_equals_tutorial_formula_on_photographs(name, method):
    original = getattr(skimage.data, name)()
    quantized = quantized_by(method, original)
    s = score(original, quantized)
    assert s.score == pytest.approx(tutorial_score(original, quantized), rel=1e-9)
    assert s.mse == pytest.approx(tutorial_mse(original, quantized), rel=1e-9)
    mean_cost, max_cost = tutorial_color_cost(quantized)
    assert (s.mean_cost, s.max_cost) == (pytest.approx(mean_cost, rel=1e-9), pytest.approx(max_cost, rel=1e-9))
    assert s.n_colors == 37


def test_palette_variant_is_the_unweighted_mean_over_distinct_colours():
    original = skimage.data.chelsea()[:64, :64]
    quantized = quantized_by("median_cut", original)
    colors = np.unique(quantized.reshape(-1, 3), axis=0)
    palette_mean = tutorial_color_cost(colors)[0]
    s = score(original, quantized)
    assert s.palette_mean_cost == pytest.approx(palette_mean, rel=1e-12)
    assert s.palette_score == pytest.approx(
        2 * tutorial_mse(original, quantized) + 21 * s.max_cost + 42 * palette_mean, rel=1e-12)


def test_weights_are_parameters():
    original = skimage.data.coffee()[:50, :80]
    quantized = quantized_by("octree", original, k=8)
    w = Weights(mse=1.0, max_cost=0.5, mean_cost=3.0)
    mean_cost, max_cost = tutorial_color_cost(quantized)
    expected = 1.0 * tutorial_mse(original, quantized) + 0.5 * max_cost + 3.0 * mean_cost
    assert score(original, quantized, w).score == pytest.approx(expected, rel=1e-9)


def test_vertex_cost_by_hand():
    assert vertex_cost(np.array([0, 0, 0])) == 0
    assert vertex_cost(np.array([255, 0, 255])) == 0
    assert vertex_cost(np.array([3, 4, 255])) == pytest.approx(5.0)
    assert vertex_cost(np.array([128, 128, 128])) == pytest.approx(np.sqrt(3) * 127)


def test_score_assignment_equals_score_of_rendered_image():
    original = skimage.data.astronaut()[::4, ::4]
    hist = ColorHistogram.from_image(original)
    proposal = get_method("kmeans").fn(Problem(original, hist, 37), n_init=1)
    q = finalize(hist, proposal.palette, proposal.labels, k=37)
    fast = score_assignment(hist, q.palette, q.labels)
    assert fast.score == pytest.approx(score(original, q.render(hist)).score, rel=1e-12)


def test_large_image_uses_the_counting_histogram_path():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1100, 1000, 3), dtype=np.uint8)  # > 2**20 pixels
    hist = ColorHistogram.from_image(image)
    assert np.array_equal(hist.render(hist.colors), image)
    assert hist.n_pixels == image.shape[0] * image.shape[1]


def test_score_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        score(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8))


def _bisected_cap(dist, mass, weights):
    """Independent oracle of best_cap: 200 halvings on the derivative's sign (float64)."""
    free = np.maximum(dist - weights.vertex_pull, 0.0)

    def slope(cap):
        return weights.max_cost - 2 * weights.pixel_mse * float(mass @ np.maximum(free - cap, 0.0)) / mass.sum()

    lo, hi = 0.0, float(free.max(initial=0.0))
    if slope(lo) >= 0:
        return 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if slope(mid) < 0 else (lo, mid)
    return hi


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 221 * 4), st.integers(0, 5000)), min_size=1, max_size=60)
       .filter(lambda rows: sum(m for _, m in rows) > 0),
       st.sampled_from([Weights(), Weights(mse=1, max_cost=0, mean_cost=0), Weights(mse=1, max_cost=500, mean_cost=3)]))
def test_best_cap_is_the_root_of_the_derivative(rows, weights):
    """The closed-form cap equals a bisection of the derivative's sign, on ties, zero masses and
    quarter-unit distances alike."""
    dist = np.array([d / 4 for d, _ in rows])
    mass = np.array([m for _, m in rows], dtype=np.float64)
    assert best_cap(dist, mass, weights) == pytest.approx(_bisected_cap(dist, mass, weights), abs=1e-9)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 40), st.integers(1, 30), st.integers(1, 12), st.integers(0, 2**32 - 1), st.integers(1, 200))
def test_score_indexed_equals_scoring_the_rendered_image(height, width, entries, seed, chunk):
    """Blocks of rows, repeated and unused palette entries: the same Score as rendering
    ``palette[index]`` and scoring it pixel by pixel."""
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    palette = rng.integers(0, 256, (entries, 3), dtype=np.uint8)
    palette[rng.integers(entries, size=entries // 3)] = palette[0]  # some entries repeat
    index = rng.integers(0, max(1, entries - 1), (height, width)).astype(np.uint8)  # the last may be unused
    assert score_indexed(original, palette, index, chunk=chunk) == score(original, palette[index])
