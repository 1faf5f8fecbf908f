"""The cnn method: a real gradient, training that improves the exact score, exactly k colours,
determinism on the CPU, awkward images, and the GPU out-of-memory fallback (without a GPU)."""

import logging

import numpy as np
import pytest
import skimage.data
import torch

import cq.methods.cnn as cnn_module
from cq.finalize import finalize
from cq.histogram import ColorHistogram, pack_rgb
from cq.methods import Problem, get_method
from cq.objective import Weights, score_assignment

K = 37
FAST = {"epochs": 4, "steps_per_epoch": 3, "device": "cpu"}


def problem(image: np.ndarray, k: int = K) -> Problem:
    image = np.ascontiguousarray(image)
    return Problem(image, ColorHistogram.from_image(image), k)


def run(image: np.ndarray, **params):
    return get_method("cnn").fn(problem(image), **{**FAST, **params})


def exactly_k(image: np.ndarray, proposal):
    """The finalised quantization, checked to have k distinct colours each used by a pixel."""
    hist = ColorHistogram.from_image(np.ascontiguousarray(image))
    quant = finalize(hist, proposal.palette, proposal.labels, k=K, rule=proposal.rule)
    assert len(np.unique(pack_rgb(quant.palette))) == K == len(np.unique(quant.labels))
    assert quant.notes == ()  # the method already returns exactly k colours
    return quant


@pytest.fixture(scope="module")
def photo():
    return skimage.data.chelsea()[::6, ::6]  # 50 x 76, non-square


def test_weights_receive_a_gradient(photo):
    config = cnn_module.Config()
    net = cnn_module.build_network(K, config)
    image = cnn_module._thumbnail(photo, config.input_size)
    colors, mass = cnn_module._points(ColorHistogram.from_image(np.ascontiguousarray(photo)), 4096)
    x = torch.as_tensor(colors, dtype=torch.float32)
    w = torch.as_tensor(mass / mass.sum(), dtype=torch.float32)
    loss = cnn_module.surrogate_loss(cnn_module._palette(net, image, K), x, w, Weights(), tau=5.0)
    loss.backward()
    for name, param in net.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_training_improves_the_exact_score_and_gives_k_colours(photo, caplog):
    with caplog.at_level(logging.INFO, logger="cq.methods.cnn"):
        proposal = run(photo, epochs=6)
    curve = proposal.extras["curve"]
    assert len(curve) == 6 and min(curve) < curve[0]
    assert proposal.extras["best_score"] == min(curve) == curve[proposal.extras["best_epoch"]]
    assert proposal.extras["device"] == "cpu"
    hist = ColorHistogram.from_image(np.ascontiguousarray(photo))
    quant = exactly_k(photo, proposal)
    assert score_assignment(hist, quant.palette, quant.labels).score == pytest.approx(min(curve))
    assert sum("cnn epoch" in r.getMessage() for r in caplog.records) == 6


def test_same_seed_same_output_on_cpu(photo):
    a, b = run(photo, seed=3), run(photo, seed=3)
    np.testing.assert_array_equal(a.palette, b.palette)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.extras["curve"] == b.extras["curve"]


@pytest.mark.parametrize("name", ["tiny_random", "grayscale", "wide"])
def test_awkward_images(name):
    rng = np.random.default_rng(0)
    image = {
        "tiny_random": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "grayscale": np.repeat(skimage.data.camera()[::16, ::16, None], 3, axis=2),
        "wide": skimage.data.rocket()[::20, ::5],
    }[name]
    exactly_k(image, run(image, epochs=2))


def test_cuda_out_of_memory_falls_back_to_cpu(photo, monkeypatch):
    real_train = cnn_module._train
    devices = []

    def train(problem, config, device):
        devices.append(device)
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_train(problem, config, device)

    monkeypatch.setattr(cnn_module, "_cuda_available", lambda: True)
    monkeypatch.setattr(cnn_module, "_train", train)
    proposal = run(photo, device="auto", epochs=1)
    assert devices == ["cuda", "cpu"]
    assert proposal.extras["device"] == "cpu"
    assert proposal.extras["fallback"] == "cuda out of memory: retried on cpu"


def test_auto_device_and_bad_parameters(photo, monkeypatch):
    monkeypatch.setattr(cnn_module, "_cuda_available", lambda: False)
    assert run(photo, device="auto", epochs=1).extras["device"] == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        run(photo, device="tpu")
    with pytest.raises(TypeError, match="unknown parameter"):
        run(photo, learning_rate=1.0)
    with pytest.raises(ValueError, match="not divisible"):
        run(photo, input_size=100)


def test_pipeline_record_and_reuse(tmp_path):
    from PIL import Image

    from cq.pipeline import Job, quantize_file

    photo = tmp_path / "rocket.png"
    Image.fromarray(skimage.data.rocket()[::8, ::8]).save(photo)
    job = Job(method="cnn", params={"epochs": 2, "steps_per_epoch": 2, "device": "cpu"})
    png, js = tmp_path / "q.png", tmp_path / "q.json"
    record = quantize_file(photo, png, js, job)
    assert record["status"] == "ok", record["error"]
    assert record["n_colors"] == K and record["device"] == "cpu"
    assert len(record["extras"]["curve"]) == 2
    again = quantize_file(photo, png, js, job, reuse=True)
    assert again["wall_time_s"] == record["wall_time_s"]  # read back from the record, not rerun
