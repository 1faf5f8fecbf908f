"""The cnn method: a real gradient into every weight, training that improves on the network's own
start (recorded), exactly k colours, epochs=0, parameter checks, batches, determinism, the CUDA
path (skipped without a GPU) and its out-of-memory fallback (without a GPU)."""

import inspect
import logging

import numpy as np
import pytest
import skimage.data
import torch

import cq.methods.cnn as cnn_module
import cq.palette_net as net_module
from cq.finalize import finalize
from cq.histogram import ColorHistogram, coarsen, pack_rgb
from cq.methods import Problem, get_method
from cq.objective import Weights

K = 37
FAST = {"epochs": 6, "steps_per_epoch": 4, "patience": 6, "device": "cpu"}


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


def networks(photo, batch=1):
    config = cnn_module.Config()
    p = problem(photo)
    points, mass, _ = coarsen(p.hist, config.bits)
    start = cnn_module._start_palette(points, mass / mass.sum(), K, Weights(), config)
    net = net_module.PaletteNets(batch, K, config, net_module.thumbnails([p] * batch, config.input_size),
                          np.stack([start] * batch), np.full(batch, 40.0), torch.device("cpu"))
    x = torch.as_tensor(np.stack([points] * batch), dtype=torch.float32)
    w = torch.as_tensor(np.stack([mass / mass.sum()] * batch), dtype=torch.float32)
    return net, x, w


def test_every_weight_receives_a_gradient(photo):
    net, x, w = networks(photo)
    net_module.backward(net, x, w, Weights(), tau=5.0)
    params = net.body() + net.head_bias() + net.cap()
    assert len(params) == 2 * 3 + 2 + 3
    for param in params:
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_closed_form_gradient_is_the_surrogates_autograd_gradient():
    gen = torch.Generator().manual_seed(0)
    colors = torch.rand(2, 300, 3, generator=gen, dtype=torch.float64) * 255
    mass = torch.rand(2, 300, generator=gen, dtype=torch.float64)
    mass /= mass.sum(1, keepdim=True)
    palette = (torch.rand(2, K, 3, generator=gen, dtype=torch.float64) * 300 - 20).requires_grad_()
    cap = torch.tensor([50.0, 90.0], dtype=torch.float64, requires_grad=True)
    loss, _ = net_module.surrogate_loss(palette, cap, colors, mass, Weights(), 4.0)
    expected = torch.autograd.grad(loss.sum(), [palette, cap])
    capped, cost = net_module.capped(palette, cap)
    value, grad_c, grad_cost, _ = net_module.surrogate_terms(capped.detach(), cost.detach(), cap.detach(), colors,
                                                             mass, Weights(), 4.0)
    got = torch.autograd.grad([capped, cost, cap], [palette, cap], [grad_c, grad_cost, torch.full_like(cap, 21.0)])
    torch.testing.assert_close(value, loss.detach())
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_training_improves_on_the_networks_own_start(photo, caplog):
    with caplog.at_level(logging.INFO, logger="cq"):
        proposal = run(photo)
    extras = proposal.extras
    curve = extras["curve"]
    assert curve[0] == extras["init_score"] and len(curve) == extras["epochs_run"] + 1
    assert extras["best_score"] == min(curve) == curve[extras["best_epoch"]]
    assert extras["best_score"] < extras["init_score"]  # training, not the start, gave the best
    assert extras["final_score"] <= extras["best_score"] and extras["device"] == "cpu"
    hist = ColorHistogram.from_image(np.ascontiguousarray(photo))
    quant = exactly_k(photo, proposal)
    assert quant.score(hist).score == pytest.approx(extras["final_score"])
    progress = [r.getMessage() for r in caplog.records if r.name == "cq.methods.cnn"]
    assert len(progress) == len(curve) and "epoch 0, exact score" in progress[0]


def test_init_score_is_the_untrained_networks_exact_score(photo):
    untrained = run(photo, epochs=0)
    trained = run(photo)
    extras = untrained.extras
    assert extras["curve"] == [extras["init_score"]] == [extras["final_score"]] and extras["best_epoch"] == 0
    assert untrained.extras["init_score"] == trained.extras["init_score"]
    hist = ColorHistogram.from_image(np.ascontiguousarray(photo))
    quant = exactly_k(photo, untrained)
    assert quant.score(hist).score == untrained.extras["init_score"]


def test_same_seed_same_output_on_cpu(photo):
    a, b = run(photo, seed=3), run(photo, seed=3)
    np.testing.assert_array_equal(a.palette, b.palette)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.extras["curve"] == b.extras["curve"]


def test_a_batch_trains_each_image_as_alone(photo, caplog):
    config = cnn_module.make_config(epochs=3, steps_per_epoch=3)
    rocket = skimage.data.rocket()[::12, ::12]
    with caplog.at_level(logging.INFO, logger="cq"):
        both = cnn_module.train_many([problem(photo), problem(rocket)], config, "cpu", names=["chelsea", "rocket"])
    progress = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name == "cq.methods.cnn"]
    assert len(progress) == 1 + max(p.extras["epochs_run"] for p in both)
    assert all(line.startswith("cnn batch of 2: epoch") for line in progress)
    for image, batched in zip((photo, rocket), both):
        alone = cnn_module.train_many([problem(image)], config, "cpu")[0]
        assert batched.extras["init_score"] == alone.extras["init_score"]
        np.testing.assert_allclose(batched.extras["curve"], alone.extras["curve"], rtol=2e-3)
        exactly_k(image, batched)


def test_fewer_colours_than_k_through_the_pipeline(tmp_path):
    from PIL import Image

    from cq.pipeline import Job, quantize_file

    rng = np.random.default_rng(1)
    image = rng.choice(np.array([[0, 0, 0], [250, 10, 10], [30, 200, 90], [255, 255, 255], [90, 90, 90]],
                                dtype=np.uint8), size=(12, 10))
    path = tmp_path / "five.png"
    Image.fromarray(image).save(path)
    job = Job(method="cnn", params={"epochs": 2, "steps_per_epoch": 2, "device": "cpu"})
    record = quantize_file(path, tmp_path / "q.png", tmp_path / "q.json", job)
    assert record["status"] == "ok", record["error"]
    assert record["n_colors"] == K


@pytest.mark.parametrize("name", ["tiny_random", "grayscale", "wide"])
def test_awkward_images(name):
    rng = np.random.default_rng(0)
    image = {
        "tiny_random": rng.integers(0, 256, (8, 8, 3), dtype=np.uint8),
        "grayscale": np.repeat(skimage.data.camera()[::16, ::16, None], 3, axis=2),
        "wide": skimage.data.rocket()[::20, ::5],
    }[name]
    exactly_k(image, run(image, epochs=2))


def test_every_parameter_is_declared_and_a_misspelt_one_is_refused(photo):
    method = get_method("cnn")
    signature = inspect.signature(method.fn).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in signature.values())
    declared = {name: p.default for name, p in signature.items() if name != "problem"}
    assert {**declared, "channels": list(declared["channels"])} == method.defaults
    with pytest.raises(TypeError, match="epoch"):
        method.fn(problem(photo), epoch=3)


@pytest.mark.parametrize("params, message", [
    ({"epochs": -1}, "epochs"), ({"patience": 0}, "patience"), ({"start": "random"}, "start"),
    ({"input_size": 100}, "input_size"), ({"device": "tpu"}, "unknown device"), ({"bits": 9}, "bits")])
def test_bad_values_are_one_line_errors_naming_the_parameter(photo, params, message):
    with pytest.raises(ValueError, match=message) as info:
        run(photo, **params)
    assert "\n" not in str(info.value)


def test_cuda_out_of_memory_falls_back_to_cpu(photo, monkeypatch):
    real_train = cnn_module._train
    devices = []

    def train(named, config, device):
        devices.append(device)
        if device == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_train(named, config, device)

    monkeypatch.setattr(cnn_module, "_cuda_available", lambda: True)
    monkeypatch.setattr(cnn_module, "_train", train)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    proposal = run(photo, device="auto", epochs=1)
    assert devices == ["cuda", "cpu"]
    assert proposal.extras["device"] == "cpu"
    assert proposal.extras["fallback"] == "cuda out of memory: retried on cpu"


def test_auto_device_is_cpu_without_cuda(photo, monkeypatch):
    monkeypatch.setattr(cnn_module, "_cuda_available", lambda: False)
    assert run(photo, device="auto", epochs=1).extras["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_path_gives_cpus_quality(photo):
    cuda, cpu = run(photo, device="cuda"), run(photo, device="cpu")
    assert cuda.extras["device"] == "cuda"
    assert cuda.extras["init_score"] == pytest.approx(cpu.extras["init_score"], rel=1e-3)
    assert cuda.extras["best_score"] < cuda.extras["init_score"]
    exactly_k(photo, cuda)


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
    extras = record["extras"]
    assert extras["curve"][0] == extras["init_score"] and len(extras["curve"]) <= 3
    assert record["scores"]["score"] == pytest.approx(extras["final_score"])
    again = quantize_file(photo, png, js, job, reuse=True)
    assert again["wall_time_s"] == record["wall_time_s"]  # read back from the record, not rerun


def test_palette_steps_alone_improve_the_start(photo):
    """The output bias's Gauss-Newton steps (every other rate 0) must carry the training: a frozen
    bias would leave every epoch at the start."""
    extras = run(photo, lr_body=0.0, lr_cap=0.0, finish=0).extras
    assert extras["best_score"] < 0.97 * extras["init_score"]

