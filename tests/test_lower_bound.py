"""The lower bound: right on hand-computed cases, equal to a brute-force minimum over the cap,
and never above the score of any quantization (random palettes and every cheap method)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from cq.finalize import assign, finalize
from cq.histogram import ColorHistogram
from cq.methods import Problem, get_method
from cq.objective import Weights, lower_bound_any_k, score, score_assignment, vertex_cost

K = 37
METHODS = ["kmeans", "median_cut", "octree", "libimagequant", "direct"]


def single_colour(rgb, shape=(4, 5)) -> ColorHistogram:
    return ColorHistogram.from_image(np.full((*shape, 3), rgb, dtype=np.uint8))


def small_photo(name: str, width: int = 96) -> np.ndarray:
    image = getattr(data, name)()[..., :3]
    height = round(image.shape[0] * width / image.shape[1])
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def kaware_bound(hist: ColorHistogram) -> float:
    from cq.bound import lower_bound as k_lower_bound

    return k_lower_bound(hist, K)


def test_single_colour_far_from_its_vertex():
    """D = 60 from black: the cap's slope 21 + 42 - (4/3)(D - T) vanishes at T = D - 47.25 = 12.75,
    so the bound is 63*12.75 + (2/3)*47.25^2 = 803.25 + 1488.375."""
    assert lower_bound_any_k(single_colour((0, 0, 60))) == pytest.approx(2291.625, abs=1e-6)


def test_single_colour_near_its_vertex():
    """D = 30 < 47.25: the cap stays 0 and the pixel pays (2/3)*30^2 = 600 to sit on the vertex."""
    assert lower_bound_any_k(single_colour((255, 225, 255))) == pytest.approx(600.0, abs=1e-6)


def test_vertex_colour_costs_nothing():
    assert lower_bound_any_k(single_colour((255, 0, 255))) == pytest.approx(0.0, abs=1e-9)


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
    assert lower_bound_any_k(hist, weights) == pytest.approx(min(total(c) for c in fine), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_random_palettes_never_beat_the_bound(seed):
    """Random images, random palettes, both assignment rules: the score stays above the bound."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    if seed % 2:  # a clustered image too, whose colours sit near the vertices
        near_vertices = np.where(image > 127, 255, 0) + rng.normal(0, 25, image.shape)
        image = np.clip(near_vertices, 0, 255).astype(np.uint8)
    hist = ColorHistogram.from_image(image)
    bound = lower_bound_any_k(hist)
    for _ in range(20):
        palette = rng.integers(0, 256, size=(K, 3)).astype(np.uint8)
        for rule in ("nearest", "objective"):
            labels = assign(hist, palette, Weights(), rule)
            assert score_assignment(hist, palette, labels).score >= bound


@pytest.mark.parametrize("name", ["astronaut", "coffee", "hubble_deep_field", "immunohistochemistry"])
def test_no_method_beats_the_bound_on_photos(name):
    image = small_photo(name)
    hist = ColorHistogram.from_image(image)
    bound = lower_bound_any_k(hist)
    for method_name in METHODS:
        method = get_method(method_name)
        if method.unavailable_reason():
            continue
        proposal = method.fn(Problem(image, hist, K), **method.defaults)
        q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
        ours = score(image, q.render(hist)).score
        assert ours >= bound, method_name
        assert ours >= kaware_bound(hist) * (1 - 1e-12), method_name


def test_no_method_beats_the_bound_on_random_images():
    rng = np.random.default_rng(11)
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    hist = ColorHistogram.from_image(image)
    for method_name in ("kmeans", "direct"):
        method = get_method(method_name)
        proposal = method.fn(Problem(image, hist, K), **method.defaults)
        q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
        assert score(image, q.render(hist)).score >= lower_bound_any_k(hist)


# ---------------------------------------------------------------------------------------------
# The k-aware bound (cq.bound): exactly k distinct uint8 colours.

from cq import bound as kbound  # noqa: E402


def lattice_counts(max_sq: int) -> np.ndarray:
    """Number of uint8 colours at each squared vertex distance 0..max_sq, counted independently:
    a channel value's offset from its nearest end, squared, convolved over the three channels."""
    offsets = np.minimum(np.arange(256), 255 - np.arange(256))
    one = np.bincount(offsets**2, minlength=max_sq + 1)[: max_sq + 1]
    return np.convolve(np.convolve(one, one)[: max_sq + 1], one)[: max_sq + 1]


def test_lattice_facts_for_k_37():
    """8 vertices at 0, 24 colours at distance 1, 24 at sqrt(2): the 37th smallest is sqrt(2)."""
    counts = lattice_counts(4)
    assert counts[:4].tolist() == [8, 24, 24, 8]
    assert kbound.kth_smallest_cost(37) == pytest.approx(np.sqrt(2), abs=1e-12)


@pytest.mark.parametrize("k", [1, 8, 9, 32, 33, 56, 57, 64, 65, 100, 256, 1000])
def test_kth_smallest_cost_matches_an_independent_count(k):
    counts = np.cumsum(lattice_counts(400))
    assert kbound.kth_smallest_cost(k) ** 2 == pytest.approx(int(np.searchsorted(counts, k)), abs=1e-9)


def brute_force_single_colour(rgb, n_pixels: int, k: int = K, max_radius: int = 8) -> float:
    """Exact optimum for an image of one colour: over every cap, the k best uint8 colours under it,
    the best one taking all pixels but k - 1, each other one pixel (enumerated by brute force)."""
    near = np.r_[0:max_radius + 1, 255 - max_radius:256]
    cube = np.stack(np.meshgrid(near, near, near, indexing="ij"), -1).reshape(-1, 3)
    cost = vertex_cost(cube)
    value = (2 / 3) * ((cube - np.array(rgb)) ** 2).sum(1) + 42 * cost
    best = np.inf
    for cap in np.unique(cost[cost <= max_radius]):
        v = np.sort(value[cost <= cap + 1e-9])
        if len(v) >= k:
            best = min(best, 21 * cap + ((n_pixels - k + 1) * v[0] + v[1:k].sum()) / n_pixels)
    return best


@pytest.mark.parametrize("rgb", [(255, 0, 255), (250, 250, 250), (3, 5, 1), (255, 230, 240)])
@pytest.mark.parametrize("n_pixels", [50, 1000, 250_000])
def test_single_colour_bound_is_the_exact_optimum(rgb, n_pixels):
    """One colour near a vertex: the bound is the brute-force optimum, so it is valid and tight."""
    hist = ColorHistogram(np.array([rgb], dtype=np.uint8), np.array([n_pixels], dtype=np.int64))
    assert kbound.lower_bound(hist, K) == pytest.approx(brute_force_single_colour(rgb, n_pixels), rel=1e-9)


@pytest.mark.parametrize("rgb,n_pixels", [((255, 0, 255), 37), ((0, 0, 60), 37), ((0, 0, 60), 250_000)])
def test_single_colour_bound_below_the_optimum(rgb, n_pixels):
    """Where the best cap lies above the exact radius (8) the bound is lower than the brute-force
    optimum over caps <= 8, which is at least the true optimum: still valid, not tight."""
    hist = ColorHistogram(np.array([rgb], dtype=np.uint8), np.array([n_pixels], dtype=np.int64))
    assert kbound.lower_bound(hist, K) <= brute_force_single_colour(rgb, n_pixels)


def finalized_score(image: np.ndarray, method_name: str) -> float:
    hist = ColorHistogram.from_image(image)
    method = get_method(method_name)
    proposal = method.fn(Problem(image, hist, K), **method.defaults)
    q = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
    rendered = q.render(hist)
    assert len(np.unique(rendered.reshape(-1, 3), axis=0)) == K
    return score(image, rendered).score


def near(rgb, sigma: float, shape=(40, 50), seed: int = 0) -> np.ndarray:
    """An image of noise around one colour (near-white, near-black, ...)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(rgb, sigma, size=(*shape, 3))), 0, 255).astype(np.uint8)


def few_colours(n: int, shape=(30, 40), seed: int = 0) -> np.ndarray:
    """An image of exactly ``n`` random colours, each on at least one pixel."""
    rng = np.random.default_rng(seed + n)
    colours = np.unique(rng.integers(0, 256, size=(3 * n, 3)), axis=0)[:n]
    idx = np.concatenate([np.arange(n), rng.integers(0, n, shape[0] * shape[1] - n)])
    return colours[rng.permutation(idx)].reshape(*shape, 3).astype(np.uint8)


KAWARE_IMAGES = {
    "random": lambda: np.random.default_rng(3).integers(0, 256, size=(20, 24, 3), dtype=np.uint8),
    "astronaut": lambda: small_photo("astronaut", 64),
    "hubble": lambda: small_photo("hubble_deep_field", 64),
    "near_white": lambda: near((250, 250, 250), 2.0),
    "near_black": lambda: near((3, 3, 3), 2.0),
    "faint_page": lambda: near((245, 243, 238), 1.5),
    "colours_1": lambda: few_colours(1),
    "colours_5": lambda: few_colours(5),
    "colours_21": lambda: few_colours(21),
    "colours_36": lambda: few_colours(36),
    "colours_37": lambda: few_colours(37),
    "near_white_5_colours_37_pixels": lambda: few_colours(5, shape=(1, 37)) // 50 + 250,
    "colours_60": lambda: few_colours(60),
}


@pytest.mark.parametrize("name", sorted(KAWARE_IMAGES))
def test_k_aware_bound_between_any_k_bound_and_every_method(name):
    image = KAWARE_IMAGES[name]()
    hist = ColorHistogram.from_image(image)
    bound = kbound.lower_bound(hist, K)
    assert bound >= lower_bound_any_k(hist) * (1 - 1e-12)
    for method_name in ("kmeans", "median_cut", "direct"):
        assert finalized_score(image, method_name) >= bound * (1 - 1e-12), method_name


@pytest.mark.parametrize("seed", range(3))
def test_k_aware_bound_below_random_exact_k_palettes(seed):
    """Random palettes finalised to exactly k colours, near-white image: never below the bound."""
    rng = np.random.default_rng(seed)
    image = near((251, 252, 250), 3.0, shape=(20, 20), seed=seed)
    hist = ColorHistogram.from_image(image)
    bound = kbound.lower_bound(hist, K)
    for _ in range(5):
        palette = np.clip(rng.normal(250, 6, size=(K, 3)), 0, 255).astype(np.uint8)
        q = finalize(hist, palette, None, k=K, rule="objective")
        assert score(image, q.render(hist)).score >= bound


def test_k_aware_bound_knows_the_cap_on_a_near_white_image():
    """Any-k bound: everything on white, max cost 0. Exactly 37 colours need max cost >= sqrt(2)."""
    hist = ColorHistogram.from_image(near((252, 252, 252), 1.0, shape=(100, 100)))
    assert kbound.lower_bound(hist, K) >= lower_bound_any_k(hist) + 21 * np.sqrt(2) - 1e-9


def test_k_aware_bound_is_exact_at_100_megapixels():
    """Counts of 10^8 pixels: float64 sums stay exact, the bound stays between its limits."""
    hist = ColorHistogram.from_image(small_photo("hubble_deep_field", 48))
    big = ColorHistogram(hist.colors, hist.counts * 50_000)
    assert big.n_pixels > 10**8
    assert lower_bound_any_k(big) == pytest.approx(lower_bound_any_k(hist), rel=1e-12)
    assert lower_bound_any_k(big) <= kbound.lower_bound(big, K) <= kbound.lower_bound(hist, K) + 1e-9


def test_other_k_and_weights():
    image = small_photo("coffee", 48)
    hist = ColorHistogram.from_image(image)
    weights = Weights(mse=5.0, max_cost=3.0, mean_cost=10.0)
    bound = kbound.lower_bound(hist, 8, weights)
    assert bound >= lower_bound_any_k(hist, weights) * (1 - 1e-12)
    method = get_method("direct")
    proposal = method.fn(Problem(image, hist, 8, weights), **method.defaults)
    q = finalize(hist, proposal.palette, proposal.labels, k=8, weights=weights, rule=proposal.rule)
    assert score(image, q.render(hist), weights).score >= bound


@pytest.mark.parametrize("seed", range(8))
def test_k_aware_bound_below_direct_for_random_k_and_weights(seed):
    """Random k and weights on random, near-vertex and few-colour images (near vertices or not)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 70))
    weights = Weights(*rng.uniform(0.2, 50, 3))
    if seed % 4 == 0:
        image = rng.integers(0, 256, (12, 15, 3))
    elif seed % 4 == 1:
        image = rng.normal(rng.choice([0, 255], 3), rng.uniform(0.5, 6), (12, 15, 3))
    else:
        colours = rng.integers(0, 256, (int(rng.integers(1, 8)), 3))
        if seed % 4 == 3:
            colours = rng.choice([0, 255], colours.shape) + rng.integers(-3, 4, colours.shape)
        image = colours[rng.integers(0, len(colours), (12, 15))]
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    hist = ColorHistogram.from_image(image)
    bound = kbound.lower_bound(hist, k, weights)
    assert bound >= lower_bound_any_k(hist, weights) * (1 - 1e-12)
    method = get_method("direct")
    proposal = method.fn(Problem(image, hist, k, weights), **method.defaults)
    q = finalize(hist, proposal.palette, proposal.labels, k=k, weights=weights, rule=proposal.rule)
    assert score(image, q.render(hist), weights).score >= bound * (1 - 1e-12)


@pytest.mark.parametrize("rgb", [(255, 255, 255), (255, 0, 0), (3, 5, 1)])
@pytest.mark.parametrize("shape", [(16, 16), (32, 32), (100, 100), (200, 320)])
def test_single_colour_icons_reach_the_bound(rgb, shape):
    """One colour at or near a vertex, icon to page sizes: direct plus the shared finalisation
    reach the bound, which is the brute-force optimum there (so both are exact)."""
    image = np.full((*shape, 3), rgb, dtype=np.uint8)
    hist = ColorHistogram.from_image(image)
    best = brute_force_single_colour(rgb, hist.n_pixels)
    assert kbound.lower_bound(hist, K) == pytest.approx(best, rel=1e-9)
    assert finalized_score(image, "direct") == pytest.approx(best, rel=1e-9)


# Fact 4 (k < 8): at most k vertices are some output colour's nearest.


def _best_single_colour(image: np.ndarray, weights: Weights) -> float:
    """The exact optimum at k = 1, over every uint8 colour: the score of one colour ``q`` is
    ``w_mse * (||q - mean||^2 + spread) / 3 + (w_max + w_mean) * cost(q)``."""
    p = image.reshape(-1, 3).astype(np.float64)
    mean, spread = p.mean(0), ((p - p.mean(0)) ** 2).sum(1).mean()
    gb = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(-1, 2)
    best = np.inf
    for r in range(256):
        q = np.column_stack([np.full(len(gb), r), gb])
        s = weights.mse * (((q - mean) ** 2).sum(1) + spread) / 3 + (weights.max_cost + weights.mean_cost) * vertex_cost(q)
        best = min(best, float(s.min()))
    return best


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea"])
def test_one_colour_bound_is_below_the_exact_optimum(name):
    """k = 1, checked against every uint8 colour: the few-vertices bound stays valid, and it is
    above the bound every k <= 8 shared before it (one vertex, not any)."""
    image = small_photo(name, 48)
    hist = ColorHistogram.from_image(image)
    bound = kbound.lower_bound(hist, 1)
    assert kbound.lower_bound(hist, 8) < bound <= _best_single_colour(image, Weights()) * (1 + 1e-12)


def test_two_colours_on_a_photo_get_the_few_vertices_bound():
    """At k = 2 the bound on a photo is well above the one every k >= 8 shares (it was equal:
    fails without fact 4), and still below direct's score."""
    image = small_photo("coffee", 96)
    hist = ColorHistogram.from_image(image)
    two, eight = kbound.lower_bound(hist, 2), kbound.lower_bound(hist, 8)
    assert two > 1.2 * eight
    method = get_method("direct")
    proposal = method.fn(Problem(image, hist, 2), **method.defaults)
    q = finalize(hist, proposal.palette, proposal.labels, k=2, rule=proposal.rule)
    assert score(image, q.render(hist)).score >= two


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 7), st.sampled_from(["random", "vertices", "photo"]),
       st.booleans())
def test_few_vertices_bound_is_below_every_method_and_random_palettes(seed, k, kind, other_weights):
    """k < 8, images drawn around several vertices, uniform or from a photo, default or random
    weights: no exactly-k output of direct, kmeans or a random palette scores below the bound."""
    rng = np.random.default_rng(seed)
    weights = Weights(*rng.uniform(0.2, 50, 3)) if other_weights else Weights()
    if kind == "random":
        image = rng.integers(0, 256, (10, 12, 3))
    elif kind == "vertices":
        centres = rng.choice([0, 255], (int(rng.integers(1, 9)), 3))
        image = centres[rng.integers(0, len(centres), (10, 12))] + rng.normal(0, rng.uniform(1, 60), (10, 12, 3))
    else:
        photo = small_photo(["coffee", "astronaut", "chelsea", "rocket"][seed % 4], 48)
        y, x = rng.integers(0, photo.shape[0] - 10), rng.integers(0, photo.shape[1] - 12)
        image = photo[y : y + 10, x : x + 12]
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    hist = ColorHistogram.from_image(image)
    bound = kbound.lower_bound(hist, k, weights)
    palettes = [get_method(name).fn(Problem(image, hist, k, weights), **get_method(name).defaults)
                for name in ("direct", "kmeans")]
    for proposal in palettes:
        q = finalize(hist, proposal.palette, proposal.labels, k=k, weights=weights, rule=proposal.rule)
        assert score(image, q.render(hist), weights).score >= bound * (1 - 1e-12)
    for _ in range(5):
        q = finalize(hist, rng.integers(0, 256, (k, 3)), None, k=k, weights=weights, rule="objective")
        assert score(image, q.render(hist), weights).score >= bound * (1 - 1e-12)
