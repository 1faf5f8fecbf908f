"""The cq command: exit codes, messages naming the file, and the score printout."""

import argparse
import json
import os
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


@pytest.mark.parametrize("flag", ["-k", "--k", "--colors"])
def test_k_has_the_short_and_the_workflow_spelling(photo, tmp_path, flag):
    out = tmp_path / "q.png"
    r = cq("quantize", photo, out, "--method", "octree", flag, "5")
    assert r.returncode == 0, r.stderr
    assert len(Image.open(out).convert("RGB").getcolors()) == 5


def test_weights_without_the_cost_terms_have_no_gap(photo, tmp_path):
    """Pure MSE weights: the lower bound is 0, so there is no gap to print (it crashed after
    writing the PNG)."""
    r = cq("quantize", photo, tmp_path / "q.png", "--method", "octree", "--weights", "2,0,0")
    assert r.returncode == 0, r.stderr
    assert "no gap to the lower bound 0.00" in r.stdout


def test_methods_lists_availability():
    r = cq("methods")
    assert r.returncode == 0 and "kmeans" in r.stdout and "available" in r.stdout
    assert "lattice_cap=4.0 (0..8)" in r.stdout  # a parameter's accepted range beside its default
    assert "device='auto' (auto|cpu|cuda)" in r.stdout  # or its accepted texts (was "(auto..cpu)")


def test_failure_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    r = cq("quantize", bad, tmp_path / "q.png", "--method", "octree")
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "broken.png" in r.stderr


def test_bad_usage_exits_2(photo, tmp_path):
    assert cq("quantize", photo).returncode == 2
    assert cq("quantize", photo, tmp_path / "q.png", "--method", "octree", "--k", "many").returncode == 2


def test_a_size_mismatch_exits_1_naming_the_file(photo, tmp_path):
    other = tmp_path / "small.png"
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(other)
    r = cq("score", photo, other)
    assert r.returncode == 1 and "small.png" in r.stderr


@pytest.mark.parametrize("args, named", [
    (["--k", "0"], "k must be from 1 to 256"),
    (["--k", "300"], "k must be from 1 to 256"),
    (["--weights", "2,nan,42"], "weights must be finite"),
    (["--weights", "2,-1,42"], "weights must be finite"),
    (["--weights", "1e300,1,1"], "weights must be finite numbers from 0 to 1e+09"),
    (["--param", "nosuch=1"], "unknown parameter 'nosuch'"),
    # Held out: NaN gave no record and a stray PNG; 1e9 ran for ever; 0 starts failed per image.
    (["--method", "direct", "--param", "lattice_cap=NaN"], "'lattice_cap' of method 'direct' must be a number from 0 to 8"),
    (["--method", "direct", "--param", "lattice_cap=1e9"], "must be a number from 0 to 8, not 1000000000.0"),
    (["--method", "direct", "--param", "n_starts=0"], "must be an integer from 1 to 1000, not 0"),
    (["--method", "kmeans", "--param", "n_init=true"], "'n_init' of method 'kmeans' must be an integer"),
    (["--method", "nope"], "unknown method 'nope'"),
    # Held out: the record was written over the input image, or over the PNG just written.
    (["--json", "INPUT"], "is the input image"),
    (["--json", "OUTPUT"], "is the output PNG"),
    (["--json", "FOLDER"], "is a folder; name a file"),
])
def test_bad_settings_stop_at_once_in_one_line_with_exit_2(photo, tmp_path, args, named):
    options = {"--method": "octree", **dict(zip(args[::2], args[1::2]))}
    options = {key: {"INPUT": photo, "OUTPUT": tmp_path / "q.png", "FOLDER": tmp_path}.get(value, value)
               for key, value in options.items()}
    before = photo.read_bytes()
    r = cq("quantize", photo, tmp_path / "q.png", "--quiet", *[x for kv in options.items() for x in kv])
    assert r.returncode == 2, r.stderr
    assert named in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "q.png").exists() and photo.read_bytes() == before


def test_an_unexpected_error_is_one_line_unless_debug(photo, tmp_path):
    # A file where the record's folder goes: writing it fails with an error the CLI did not expect.
    (tmp_path / "file").write_text("")
    args = ("quantize", photo, tmp_path / "q.png", "--method", "octree", "--json", tmp_path / "file" / "q.json")
    r = cq(*args)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = cq(*args, "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


@pytest.mark.parametrize("args", [[], ["quantize"], ["score"], ["methods"], ["nightly"]],
                         ids=["cq", "quantize", "score", "methods", "nightly"])
def test_help_is_plain_text(args):
    """Help is read in a terminal: no reStructuredText or Markdown markup."""
    r = cq(*args, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: cq")
    assert "``" not in r.stdout and "`" not in r.stdout


def test_every_argument_has_help():
    from cq.cli import _parser

    parsers = [_parser()]
    for parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(p for name, p in action.choices.items() if name != "nightly")
            elif action.help is None:
                raise AssertionError(f"{parser.prog}: {action.option_strings or action.dest} has no help")


@pytest.mark.parametrize("quiet", [[], ["--quiet"], ["-q"]])
def test_a_failing_method_is_one_line_quiet_or_not(photo, tmp_path, capsys, monkeypatch, quiet):
    """Held out: with --quiet a method's failure printed its whole traceback (no log handler,
    so Python's last-resort one)."""
    import logging

    from cq import cli
    from cq.methods import _REGISTRY, Method

    def boom(problem):
        raise RuntimeError("the method broke")

    monkeypatch.setitem(_REGISTRY, "boom", Method("boom", boom, "1", {}))
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    assert cli.main(["quantize", str(photo), str(tmp_path / "q.png"), "--method", "boom", *quiet]) == 1
    err = capsys.readouterr().err
    assert "the method broke" in err and "Traceback" not in err, err
    assert not (tmp_path / "q.png").exists()


def test_a_reader_that_leaves_early_gets_no_error_message(photo, tmp_path):
    """`cq score a b | head -1`: the pipe closes before cq writes (held out: 'cq: error: [Errno
    32] Broken pipe')."""
    out = tmp_path / "q.png"
    assert cq("quantize", photo, out, "--method", "octree").returncode == 0
    read, write = os.pipe()
    done = subprocess.Popen([sys.executable, "-m", "cq.cli", "score", str(photo), str(out)], stdout=write,
                            stderr=subprocess.PIPE)
    os.close(write)
    os.close(read)  # before the process has even imported numpy
    assert done.wait(timeout=120) == 1
    assert done.stderr.read() == b""


def test_an_output_that_is_a_folder_is_refused_before_any_work(photo, tmp_path):
    r = cq("quantize", photo, tmp_path, "--method", "octree")
    assert r.returncode == 2 and "is a folder; name a file" in r.stderr and r.stderr.count("\n") == 1, r.stderr
