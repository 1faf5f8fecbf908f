"""Every registered baseline, end to end: exactly k colours in a PNG that reads back identically."""

import numpy as np
import pytest
import skimage.data
from PIL import Image

from cq.methods import all_methods, get_method
from cq.pipeline import Job, quantize_file
from cq.record import read_record

BASELINES = ["kmeans", "median_cut", "octree", "libimagequant"]


@pytest.fixture(scope="module")
def photo_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "rocket.png"
    Image.fromarray(skimage.data.rocket()[::4, ::4]).save(path)
    return path


def test_registry_lists_the_baselines():
    assert set(BASELINES) <= set(all_methods())
    with pytest.raises(KeyError, match="unknown method 'nope'"):
        get_method("nope")


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_writes_exactly_k_colours(method, photo_path, tmp_path):
    png, js = tmp_path / "q.png", tmp_path / "q.json"
    record = quantize_file(photo_path, png, js, Job(method=method))
    assert record["status"] == "ok", record["error"]
    with Image.open(png) as im:
        assert im.mode == "P"
        pixels = np.asarray(im.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) == 37 == record["n_colors"]
    assert sorted(map(tuple, np.unique(pixels.reshape(-1, 3), axis=0).tolist())) == sorted(
        map(tuple, record["palette"]))
    saved = read_record(js)
    assert saved["scores"]["gap"] > 0 and saved["method"] == method
    assert saved["image"]["sha256"] and saved["versions"]["cq"]


def test_variant_name_labels_the_record(photo_path, tmp_path):
    job = Job(method="kmeans", params={"n_init": 1, "seed": 3}, name="kmeans_fast", k=12)
    record = quantize_file(photo_path, tmp_path / "v.png", tmp_path / "v.json", job)
    assert (record["method"], record["base_method"], record["n_colors"]) == ("kmeans_fast", "kmeans", 12)
    assert record["params"]["seed"] == 3


def test_missing_optional_package_is_one_line(monkeypatch, photo_path, tmp_path):
    import cq.methods as registry

    monkeypatch.setitem(registry._REGISTRY, "libimagequant",
                        registry.Method("libimagequant", lambda p: None, "1", {}, ("no_such_pkg_xyz",)))
    record = quantize_file(photo_path, tmp_path / "l.png", None, Job(method="libimagequant"))
    assert record["status"] == "error"
    assert "needs the Python package 'no_such_pkg_xyz'" in record["error"]


def test_reuse_skips_an_unchanged_job_and_redoes_a_changed_one(photo_path, tmp_path):
    png, js = tmp_path / "r.png", tmp_path / "r.json"
    first = quantize_file(photo_path, png, js, Job(method="octree"), reuse=True)
    again = quantize_file(photo_path, png, js, Job(method="octree"), reuse=True)
    assert again == first  # the same record, not recomputed
    other_k = quantize_file(photo_path, png, js, Job(method="octree", k=20), reuse=True)
    assert other_k["n_colors"] == 20 and other_k["created"] >= first["created"]
    png.unlink()
    redone = quantize_file(photo_path, png, js, Job(method="octree", k=20), reuse=True)
    assert png.exists() and redone["wall_time_s"] != other_k["wall_time_s"]


def test_unknown_method_becomes_an_error_record(photo_path, tmp_path):
    record = quantize_file(photo_path, tmp_path / "u.png", tmp_path / "u.json", Job(method="nope"))
    assert record["status"] == "error" and "unknown method 'nope'" in record["error"]
    assert read_record(tmp_path / "u.json")["method_version"] == "unknown"


def test_time_limit_becomes_an_error_record(monkeypatch, photo_path, tmp_path):
    import time

    import cq.methods as registry

    def slow(problem):
        time.sleep(5)

    monkeypatch.setitem(registry._REGISTRY, "slow", registry.Method("slow", slow, "1", {}))
    png = tmp_path / "s.png"
    record = quantize_file(photo_path, png, tmp_path / "s.json", Job(method="slow", time_limit_s=0.2))
    assert record["status"] == "error" and "exceeded its time limit of 0.2 s" in record["error"]
    assert record["wall_time_s"] < 3 and not png.exists()


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_gives_exactly_k_colours_on_a_six_colour_image(method, tmp_path):
    """Fewer distinct colours than k: the method still runs and the finalisation splits."""
    grey = (np.arange(6, dtype=np.uint8) * 40).repeat(3).reshape(1, 6, 3).repeat(10, axis=0)
    Image.fromarray(grey).save(tmp_path / "six.png")
    record = quantize_file(tmp_path / "six.png", tmp_path / "q.png", tmp_path / "q.json", Job(method=method))
    assert record["status"] == "ok", record["error"]
    assert len(np.unique(np.asarray(Image.open(tmp_path / "q.png").convert("RGB")).reshape(-1, 3), axis=0)) == 37
