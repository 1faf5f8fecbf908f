"""No ok record without its checks: the written PNG is re-scored independently before the record.

Each test breaks one link on purpose (the file written, the method's figure, the bound) and
expects an error record naming the failed check, no PNG, and never ``status: ok``.
"""

import numpy as np
import pytest
from PIL import Image

import cq.bound
import cq.pipeline
from cq.finalize import Quantization
from cq.imageio import write_indexed_png
from cq.pipeline import Job, quantize_file
from conftest import tiny_photo


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(np.ascontiguousarray(tiny_photo("chelsea", (100, 120), size=(64, 48)))).save(path)
    return path


def quantize(tmp_path, photo):
    png = tmp_path / "out" / "q.png"
    record = quantize_file(photo, png, tmp_path / "out" / "q.json", Job(method="median_cut"))
    return record, png


def test_a_good_result_passes(tmp_path, photo):
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "ok" and png.is_file()


def test_a_written_file_that_differs_is_an_error(tmp_path, photo, monkeypatch):
    def swapped(path, palette, index):  # two palette entries exchanged: same colours, wrong pixels
        palette = np.array(palette)
        palette[[0, 1]] = palette[[1, 0]]
        write_indexed_png(path, palette, index)

    monkeypatch.setattr(cq.pipeline, "write_indexed_png", swapped)
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "error" and "invariant: written image scores" in record["error"]
    assert not png.exists()


def test_a_written_file_that_is_not_indexed_is_an_error(tmp_path, photo, monkeypatch):
    def rendered(path, palette, index):  # the right pixels, but as an RGB PNG
        Image.fromarray(np.asarray(palette)[index]).save(path, format="PNG")

    monkeypatch.setattr(cq.pipeline, "write_indexed_png", rendered)
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "error" and "not an indexed (P) PNG" in record["error"]
    assert not png.exists()


def test_a_wrong_method_figure_is_an_error(tmp_path, photo, monkeypatch):
    real = Quantization.score
    monkeypatch.setattr(Quantization, "score", lambda self, hist, w: real(self, hist, w).__class__(
        **{**real(self, hist, w).as_dict(), "score": real(self, hist, w).score * 0.9}))
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "error" and "the method's figure is" in record["error"]
    assert not png.exists()


def test_a_score_below_the_bound_is_an_error(tmp_path, photo, monkeypatch):
    monkeypatch.setattr(cq.bound, "bounds", lambda hist, k, weights: (1e9, 1e9))
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "error" and "below the lower bound" in record["error"]
    assert not png.exists()


def test_a_failed_check_keeps_the_previous_png_out(tmp_path, photo, monkeypatch):
    """A rerun that fails its check removes the older PNG: no file contradicts the record."""
    _, png = quantize(tmp_path, photo)
    assert png.is_file()
    monkeypatch.setattr(cq.bound, "bounds", lambda hist, k, weights: (1e9, 1e9))
    record, png = quantize(tmp_path, photo)
    assert record["status"] == "error" and not png.exists()
    assert not list(png.parent.glob(".*tmp"))
