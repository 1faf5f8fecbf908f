"""cq.jobs, the command the workflow's quantize jobs run: its arguments as the rules pass them
(``--name=VALUE``, the spec as JSON), what it writes, and its exit status."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image

from conftest import REPO, tiny_photo
from cq.pipeline import Job
from cq.record import read_record
from cq.shards import read_manifest, write_listing

SPEC = json.dumps(Job(method="octree").to_spec())


def jobs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cq.jobs", *args], cwd=REPO, capture_output=True, text=True)


def save_photo(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100, 100)))).save(path)


def test_quantize_writes_the_png_and_record_of_a_name_that_starts_with_a_dash(tmp_path):
    image = tmp_path / "-dash {x} 'q'.png"
    save_photo(image)
    png, record, log = tmp_path / "out/r.png", tmp_path / "out/r.json", tmp_path / "r.log"
    done = jobs("quantize", f"--image={image}", f"--png={png}", f"--record={record}", f"--spec={SPEC}",
                "--runtime=1", f"--log={log}")
    assert done.returncode == 0, done.stderr
    assert read_record(record)["status"] == "ok" and png.exists()
    assert f"octree on {image}: ok" in log.read_text()


def test_quantize_fails_and_says_why_when_no_record_can_be_written(tmp_path):
    image = tmp_path / "a.png"
    save_photo(image)
    (tmp_path / "out").write_text("a file where the results folder should be")
    log = tmp_path / "r.log"
    done = jobs("quantize", f"--image={image}", f"--png={tmp_path}/out/r.png", f"--record={tmp_path}/out/r.json",
                f"--spec={SPEC}", "--runtime=1", f"--log={log}")
    assert done.returncode == 1
    assert "no record written" in log.read_text() and "NotADirectoryError" in log.read_text()


def test_shard_writes_every_record_and_then_the_manifest(tmp_path):
    for name in ("a.png", "-b {1}.png"):
        save_photo(tmp_path / "images" / name)
    (tmp_path / "images/bad.png").write_bytes(b"not a PNG")
    listing, manifest = tmp_path / "results/shards/_images/0000.tsv", tmp_path / "results/shards/octree/0000.tsv"
    write_listing(str(listing), ["a.png", "-b {1}.png", "bad.png"])
    done = jobs("shard", f"--listing={listing}", f"--manifest={manifest}", f"--input-dir={tmp_path}/images",
                f"--results-dir={tmp_path}/results", f"--spec={SPEC}", "--runtime=1", f"--log={tmp_path}/s.log")
    assert done.returncode == 0, done.stderr
    rows = read_manifest(manifest)
    assert {image: row["status"] for image, row in rows.items()} == {"a.png": "ok", "-b {1}.png": "ok", "bad.png": "error"}
