"""Scores are exact at every size: checked against an independent float64 computation.

The oracle below follows docs/objective.md literally, pixel by pixel, with the 8 vertices spelt out
(in chunks, so a 4 MP image fits), and shares no code with cq.objective. The images are 4 MP
and more, quantized to palettes far from them (large MSE), where an int32 sum used to wrap.
"""

import itertools

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cq.finalize import finalize
from cq.histogram import ColorHistogram
from cq.objective import Weights, score
from cq.pipeline import Job, quantize_file

VERTICES = np.array(list(itertools.product([0.0, 255.0], repeat=3)))


def oracle(original: np.ndarray, quantized: np.ndarray, w=Weights()) -> float:
    """2*MSE + 21*max_cost + 42*mean_cost, per pixel in float64."""
    a = original.reshape(-1, 3).astype(np.float64)
    b = quantized.reshape(-1, 3).astype(np.float64)
    sq, cost_sum, cost_max = 0.0, 0.0, 0.0
    step = 1 << 18
    for s in range(0, len(a), step):
        d = a[s:s + step] - b[s:s + step]
        sq += float((d * d).sum())
        q = b[s:s + step]
        cost = np.sqrt(((q[:, None, :] - VERTICES[None]) ** 2).sum(2)).min(1)
        cost_sum += float(cost.sum())
        cost_max = max(cost_max, float(cost.max()))
    return w.mse * sq / a.size + w.max_cost * cost_max + w.mean_cost * cost_sum / len(a)


@pytest.fixture(scope="module")
def big():
    """astronaut upscaled to 2048 x 2048 (4.2 MP)."""
    image = Image.fromarray(skimage.data.astronaut()).resize((2048, 2048), Image.Resampling.BILINEAR)
    return np.asarray(image)


def test_score_of_a_far_palette_matches_the_oracle(big):
    """Every pixel mapped to its colour's complement: MSE in the thousands, sums past 2**31."""
    far = 255 - big
    s = score(big, far)
    assert s.mse > 5000
    assert s.score == pytest.approx(oracle(big, far), rel=1e-9)


def test_histogram_score_of_a_far_quantization_matches_the_oracle(big):
    hist = ColorHistogram.from_image(big)
    rng = np.random.default_rng(0)
    q = finalize(hist, rng.integers(0, 256, (37, 3)).astype(float), k=37)
    rendered = q.render(hist)
    assert q.score(hist).score == pytest.approx(oracle(big, rendered), rel=1e-9)


@pytest.mark.slow
def test_a_pipeline_record_matches_the_oracle_on_its_written_png(big, tmp_path):
    """direct pulls colours far toward the vertices (MSE ~900): the case that went negative."""
    src = tmp_path / "big.png"
    Image.fromarray(big).save(src)
    record = quantize_file(src, tmp_path / "q.png", tmp_path / "q.json", Job(method="direct"))
    written = np.asarray(Image.open(tmp_path / "q.png").convert("RGB"))
    assert record["status"] == "ok" and record["scores"]["mse"] > 500
    assert record["scores"]["score"] == pytest.approx(oracle(big, written), rel=1e-9)
    assert record["scores"]["lower_bound"] <= record["scores"]["score"]
