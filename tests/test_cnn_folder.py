"""cnn_folder: a network trained over a tiny folder of real photographs; per image exactly k colours
and a valid record; the network's inputs matter; fine-tuning improves on the prediction; the
network file's errors; the sample and the network's identity; the workflow trains it once."""

import json

import numpy as np
import pytest
import skimage.data
from hypothesis import given, strategies as st
from PIL import Image

from cq.histogram import ColorHistogram
from cq.methods import Problem, get_method
from cq.methods.cnn_folder import folder as folder_module
from cq.methods.cnn_folder.method import predict, prediction_score
from cq.methods.cnn_folder.network import Shape
from cq.methods.cnn_folder.train import TrainConfig, load, prepare, save, train
from cq.objective import Weights

K = 37
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")


def photo(name: str, step: int = 8) -> np.ndarray:
    return np.ascontiguousarray(getattr(skimage.data, name)()[::step, ::step, :3])


def problem(image: np.ndarray) -> Problem:
    return Problem(image, ColorHistogram.from_image(image), K)


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """A network trained 3 epochs on six downscaled photographs, its file, and their problems."""
    images = [photo(name) for name in PHOTOS]
    net, facts = train(prepare(images, Shape(K), 4), Shape(K), Weights(), TrainConfig(epochs=3, batch=4, threads=1))
    path = tmp_path_factory.mktemp("net") / "network.pt"
    save(path, net, Weights())
    return net, str(path), [problem(image) for image in images], facts


def exact(prob: Problem, palette, cap) -> float:
    return prediction_score(prob, palette, float(cap))


def test_training_facts(network):
    _, _, _, facts = network
    assert facts["epochs"] == len(facts["loss_curve"]) == 3 and facts["n_images"] == len(PHOTOS)
    assert facts["device"] == "cpu" and facts["cpu_s"] > 0 and all(np.isfinite(facts["loss_curve"]))


def test_exactly_k_colours_and_a_valid_record(network, tmp_path):
    from cq.pipeline import Job, quantize_file

    path = tmp_path / "coffee.png"
    Image.fromarray(photo("coffee", 6)).save(path)
    job = Job(method="cnn_folder", params={"network": network[1], "device": "cpu"})
    record = quantize_file(path, tmp_path / "q.png", tmp_path / "q.json", job)
    assert record["status"] == "ok", record["error"]
    assert record["n_colors"] == K and record["device"] == "cpu"
    extras = record["extras"]
    assert record["scores"]["score"] == pytest.approx(extras["final_score"])
    assert record["scores"]["score"] >= record["scores"]["lower_bound"]


def test_the_inputs_matter(network):
    """Shown a constant in place of each image's thumbnail, histogram and cap hint (its palette still
    mixes the image's own bins), the same network predicts palettes that score at least 2% worse
    (geometric mean over the photographs)."""
    net, _, problems, _ = network
    own = [exact(p, pal, cap) for p, pal, cap in zip(problems, *predict(net, problems, "cpu"))]
    blind = [exact(p, pal, cap) for p, pal, cap in zip(problems, *predict(net, problems, "cpu", constant=True))]
    assert np.exp(np.mean(np.log(np.array(blind) / own))) > 1.02


def test_predictions_depend_on_the_image(network):
    """Two photographs' palettes and caps differ, and each photograph's own palette scores better on
    it than the palette predicted for any other."""
    net, _, problems, _ = network
    palettes, caps = predict(net, problems, "cpu")
    assert len({round(float(c), 3) for c in caps}) == len(problems)
    for i, p in enumerate(problems):
        own = exact(p, palettes[i], caps[i])
        assert all(own < exact(p, palettes[j], caps[j]) for j in range(len(problems)) if j != i)


def test_the_descent_improves_on_the_prediction(network):
    """From the prediction, the descent's result scores lower on every photograph; without the
    descent (coarse_iter 0) the result is the prediction itself, rounded within its cap."""
    net, path, problems, _ = network
    method = get_method("cnn_folder")
    predicted = [exact(p, pal, cap) for p, pal, cap in zip(problems, *predict(net, problems, "cpu"))]
    descended = [method.fn(p, network=path, device="cpu").extras for p in problems]
    assert all(e["final_score"] < score for e, score in zip(descended, predicted))
    alone = [method.fn(p, network=path, device="cpu", coarse_iter=0).extras for p in problems]
    assert [e["final_score"] for e in alone] == predicted and {e["stage"] for e in alone} == {"prediction"}


def test_more_starts_never_start_worse(network):
    """The descent goes on from the best start on the binned histogram: with k-means++ starts beside
    the prediction, that start scores no worse there than the prediction's own run."""
    from cq.descent import lloyd
    from cq.methods.cnn_folder.method import _best_start
    from cq.points import assign, binned_points, points_score

    def score(points, palette, weights):
        labels, cost = assign(points, palette, weights)
        return points_score(points, cost, palette, labels, weights)

    net, _, problems, _ = network
    for p, palette in zip(problems[:3], predict(net, problems[:3], "cpu")[0]):
        points = binned_points(p.hist, 5, K)
        params = {"coarse_iter": 60, "seed": 0}
        alone, more = (_best_start(points, palette, p.weights, {**params, "n_starts": n}) for n in (0, 2))
        np.testing.assert_array_equal(alone, lloyd(points, palette, p.weights, 60)[0])
        assert score(points, more, p.weights) <= score(points, alone, p.weights)


def test_network_file_round_trip(network):
    net, path, problems, _ = network
    again, weights = load(path)
    assert weights == Weights()
    for a, b in zip(predict(net, problems[:2], "cpu"), predict(again, problems[:2], "cpu")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("params, message", [
    ({"network": ""}, "no network file given"), ({"network": "/nonexistent/net.pt"}, "no such network file"),
    ({"coarse_iter": -1}, "coarse_iter"), ({"fine_bits": 9}, "fine_bits"), ({"device": "tpu"}, "unknown device")])
def test_bad_parameters_are_one_line_errors(network, params, message):
    with pytest.raises(ValueError, match=message) as info:
        get_method("cnn_folder").fn(network[2][0], **{"network": network[1], "device": "cpu", **params})
    assert "\n" not in str(info.value)


def test_no_descent_passes_the_settings_check():
    """coarse_iter 0 (the network alone) and fine_iter 0 are documented settings: the start check
    refused them (limits from 1)."""
    from cq.config import check_params

    check_params("config: cnn_folder", get_method("cnn_folder"), {"coarse_iter": 0, "fine_iter": 0})


def test_a_foreign_file_or_other_weights_are_refused(network, tmp_path):
    bad = tmp_path / "net.pt"
    bad.write_bytes(b"not a network")
    method = get_method("cnn_folder")
    with pytest.raises(ValueError, match="not a cnn_folder network file"):
        method.fn(network[2][0], network=str(bad), device="cpu")
    other = Problem(network[2][0].image, network[2][0].hist, K, Weights(mse=1.0))
    with pytest.raises(ValueError, match="network trained for k=37"):
        method.fn(other, network=network[1], device="cpu")


names = st.lists(st.text(st.characters(min_codepoint=48, max_codepoint=122), min_size=1, max_size=8),
                 unique=True, max_size=30)


@given(names, names, st.integers(1, 10))
def test_a_growing_folder_keeps_its_sample(old, new, n):
    """An image sampled from the larger folder that was in the smaller one was sampled there too:
    adding images only displaces, never reshuffles."""
    grown = sorted(set(old) | set(new))
    small, large = folder_module.choose_sample(old, n), folder_module.choose_sample(grown, n)
    assert len(large) == min(n, len(grown)) and set(large) & set(old) <= set(small)


def test_network_id_follows_what_shapes_the_network():
    conf = folder_module.settings({})
    base = folder_module.network_id(conf, K, {"mse": 2}, "a\t1\t2\n")
    assert base == folder_module.network_id({**conf, "threads": 8, "gpu": True}, K, {"mse": 2.0}, "a\t1\t2\n")
    assert base != folder_module.network_id({**conf, "epochs": 31}, K, {"mse": 2}, "a\t1\t2\n")
    assert base != folder_module.network_id(conf, K, {"mse": 2}, "a\t1\t3\n")
    assert base != folder_module.network_id(conf, 16, {"mse": 2}, "a\t1\t2\n")
    with pytest.raises(ValueError, match="unknown setting"):
        folder_module.settings({"epoch": 3})


@pytest.mark.slow
def test_the_workflow_trains_the_network_once(tmp_path):
    import yaml

    from conftest import snakemake, write_tiny_photos

    write_tiny_photos(tmp_path / "images")
    config = {"input_dir": "images", "results_dir": "results", "methods": ["cnn_folder"], "shard_size": 0,
              "cnn_folder_network": {"epochs": 2, "sample": 3, "threads": 1}}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    first = snakemake(tmp_path)
    assert first.stderr.count("rule cnn_folder_network:") == 1
    (trained,) = (tmp_path / "results/_cnn_folder").glob("*/network.json")
    info = json.loads(trained.read_text())
    assert len(info["images"]) == 3 and info["epochs"] == len(info["loss_curve"]) == 2 and info["device"] == "cpu"
    records = [json.loads(p.read_text()) for p in (tmp_path / "results/cnn_folder").rglob("*.json")]
    assert len(records) == 4 and all(r["status"] == "ok" and r["n_colors"] == K for r in records)
    assert {r["params"]["network"] for r in records} == {str(trained.with_name("network.pt").relative_to(tmp_path))}
    stamp = trained.stat().st_mtime_ns
    second = snakemake(tmp_path)
    assert "Nothing to be done" in second.stderr + second.stdout and trained.stat().st_mtime_ns == stamp
    config["cnn_folder_network"]["epochs"] = 3  # a training setting changed: a new network, new records
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    changed = snakemake(tmp_path, "-n")
    assert changed.stdout.count("rule cnn_folder_network:") == 1 and changed.stdout.count("rule quantize:") == 4


def _columns(network: str = "") -> dict:
    spec = {"method": "cnn_folder", "params": {"network": network}, "k": K, "weights": {"mse": 2},
            "read": {"background": [255, 255, 255], "max_pixels": None}}
    return {"cnn_folder": {"spec": spec}, "kmeans": {"spec": {"method": "kmeans", "params": {}}}}


def _wildcards(method: str):
    return type("W", (), {"method": method})


def test_plan_names_the_network_in_the_jobs_it_serves(tmp_path):
    config = {"cnn_folder_network": {"sample": 2}, "extensions": ["png"]}
    unused = folder_module.plan(config, {"kmeans": _columns()["kmeans"]}, "in", ["a.png"], "results")
    assert unused.columns == () and unused.input(_wildcards("kmeans")) == []
    own = _columns("mine.pt")
    assert folder_module.plan(config, own, "in", ["a.png"], "results").columns == ()
    assert own["cnn_folder"]["spec"]["params"]["network"] == "mine.pt"
    methods = _columns()
    plan = folder_module.plan(config, methods, str(tmp_path), ["a.png", "b.png", "c.png"], "results", "logs")
    assert len(plan.sample) == 2 and plan.path.startswith("results/_cnn_folder/")
    assert methods["cnn_folder"]["spec"]["params"]["network"] == plan.path
    assert plan.input(_wildcards("cnn_folder")) == [plan.path] and plan.input(_wildcards("kmeans")) == []
    ident = plan.path.split("/")[2]
    assert plan.output.format(ident=ident) == plan.path and plan.log.format(ident=ident) == f"logs/_cnn_folder/{ident}.log"
    assert plan.spec == {"k": K, "weights": {"mse": 2}, "read": {"background": [255, 255, 255], "max_pixels": None}}
    with pytest.raises(ValueError, match="train_dir 'nowhere' is not a folder"):
        folder_module.plan({**config, "cnn_folder_network": {"train_dir": "nowhere"}}, _columns(), "in", [], "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images to train on"):
        folder_module.plan({**config, "cnn_folder_network": {"train_dir": str(tmp_path / "empty")}}, _columns(),
                           "in", ["a.png"], "results")
