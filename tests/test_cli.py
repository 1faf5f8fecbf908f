"""The cq command: exit codes, messages naming the file, and the score printout."""

import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image


def cq(*args):
    return subprocess.run([sys.executable, "-m", "cq.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "chelsea cat é.png"
    Image.fromarray(skimage.data.chelsea()[::3, ::3]).save(path)
    return path


def test_quantize_then_score(photo, tmp_path):
    out, js = tmp_path / "q.png", tmp_path / "q.json"
    r = cq("quantize", photo, out, "--method", "median_cut", "--json", js)
    assert r.returncode == 0, r.stderr
    assert "37 colours" in r.stdout
    record = json.loads(js.read_text())
    r = cq("score", photo, out)
    assert r.returncode == 0
    printed = dict(line.split() for line in r.stdout.splitlines())
    assert float(printed["score"]) == pytest.approx(record["scores"]["score"], rel=1e-6)
    assert float(printed["gap"]) == pytest.approx(record["scores"]["gap"], rel=1e-6)


def test_methods_lists_availability():
    r = cq("methods")
    assert r.returncode == 0 and "kmeans" in r.stdout and "available" in r.stdout


def test_failure_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    r = cq("quantize", bad, tmp_path / "q.png", "--method", "octree")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "broken.png" in r.stderr


def test_bad_usage_exits_2(photo, tmp_path):
    assert cq("quantize", photo).returncode == 2
    assert cq("quantize", photo, tmp_path / "q.png", "--method", "octree", "--k", "many").returncode == 2


def test_unknown_method_and_size_mismatch_exit_1(photo, tmp_path):
    r = cq("quantize", photo, tmp_path / "q.png", "--method", "nope")
    assert r.returncode == 1 and "unknown method 'nope'" in r.stderr
    other = tmp_path / "small.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(other)
    r = cq("score", photo, other)
    assert r.returncode == 1 and "small.png" in r.stderr
