"""The record decides what is current (cq/freshness.py), and the small guards of a night:
each fault of issue 11 once, deterministically, without Snakemake."""

import errno
import json
import math
import os
import shutil

import numpy as np
import pytest
from PIL import Image

import cq.pipeline as pipeline
from conftest import tiny_photo
from cq import freshness, history, outcome
from cq.best import update_best
from cq.imageio import load_image
from cq.objective import Weights
from cq.pipeline import Job, quantize_file

JOB = Job(method="octree")


def photo(path, name="chelsea", origin=(100, 120), flip=False):
    pixels = np.ascontiguousarray(tiny_photo(name, origin))
    Image.fromarray(pixels[::-1].copy() if flip else pixels).save(path)
    return path


def run(tmp_path, image, job=JOB, method="octree"):
    out = tmp_path / "results" / method
    return quantize_file(image, out / f"{image.name}.png", out / f"{image.name}.json", job)


def current(tmp_path, image, job=JOB, method="octree"):
    out = tmp_path / "results" / method
    record = freshness.load_record(out / f"{image.name}.json")
    return freshness.check(record, image, out / f"{image.name}.png", freshness.job_fingerprint(job))


def backdate(path, seconds=10):
    """Make a stat trusted (not racy) by moving mtime back; ctime stays (it cannot be set)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_unchanged_image_is_current_without_hashing(tmp_path, monkeypatch):
    image = photo(tmp_path / "a.png")
    backdate(image)
    run(tmp_path, image)
    monkeypatch.setattr(freshness, "file_sha256", lambda p: pytest.fail("hashed an unchanged file"))
    record = freshness.load_record(tmp_path / "results/octree/a.png.json")
    record["image"]["stat"].pop("racy", None)  # as if recorded long after the file's last change
    assert freshness.check(record, image, tmp_path / "results/octree/a.png.png",
                           freshness.job_fingerprint(JOB))[0]


def test_other_content_with_the_same_mtime_is_stale(tmp_path):  # touch -r
    image = photo(tmp_path / "a.png")
    run(tmp_path, image)
    st = os.stat(image)
    photo(tmp_path / "b.png", flip=True)
    shutil.move(tmp_path / "b.png", image)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert current(tmp_path, image)[:2] == (False, "the image changed")


def test_other_content_with_an_older_mtime_is_stale(tmp_path):  # cp -p of an older version
    image = photo(tmp_path / "a.png")
    run(tmp_path, image)
    older = photo(tmp_path / "old.png", flip=True)
    os.utime(older, (1_000_000, 1_000_000))
    shutil.copy2(older, image)
    assert os.stat(image).st_mtime < 2_000_000
    assert current(tmp_path, image)[:2] == (False, "the image changed")


def test_a_touch_alone_is_current_and_its_new_stat_is_stored(tmp_path):
    image = photo(tmp_path / "a.png")
    run(tmp_path, image)
    os.utime(image, (2_000_000_000, 2_000_000_000))
    ok, _, refreshed = current(tmp_path, image)
    assert ok and refreshed["mtime_ns"] == 2_000_000_000 * 10**9
    out = tmp_path / "results/octree"
    before = (out / "a.png.json").read_bytes()
    again = quantize_file(image, out / "a.png.png", out / "a.png.json", JOB, reuse=True)
    assert (out / "a.png.json").read_bytes() == before and again["image"]["sha256"]  # a job keeps it as it is
    pairs = [(image, out / "a.png.png", out / "a.png.json", freshness.job_fingerprint(JOB))]
    assert freshness.stale_outputs(pairs, refresh=True) == []  # the nightly check stores the new stat
    assert freshness.load_record(out / "a.png.json")["image"]["stat"]["mtime_ns"] == refreshed["mtime_ns"]


def test_a_file_overwritten_during_its_job_is_redone_next_time(tmp_path, monkeypatch):
    image = photo(tmp_path / "a.png")
    real_load = pipeline.load_image

    def load_then_overwrite(path, **kwargs):  # the upload goes on after the job read the file
        loaded = real_load(path, **kwargs)
        photo(tmp_path / "b.png", flip=True)
        os.replace(tmp_path / "b.png", image)
        return loaded
    monkeypatch.setattr(pipeline, "load_image", load_then_overwrite)
    record = run(tmp_path, image)
    assert record["status"] == "ok" and record["image"]["sha256"] != freshness.file_sha256(image)
    assert current(tmp_path, image)[:2] == (False, "the image changed")


def test_a_changed_k_or_parameter_or_read_option_is_stale(tmp_path):
    image = photo(tmp_path / "a.png")
    run(tmp_path, image)
    assert current(tmp_path, image)[0]
    for other in (Job(method="octree", k=5), Job(method="octree", weights=Weights(1, 21, 42)),
                  Job(method="octree", read=pipeline.ReadOptions(background=None))):
        assert current(tmp_path, image, job=other)[:2] == (False, "the job changed")


def test_transient_failures_are_retried_and_a_bad_image_is_not(tmp_path, monkeypatch):
    image = photo(tmp_path / "a.png")
    real_write = pipeline.write_indexed_png

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pipeline, "write_indexed_png", full)
    record = run(tmp_path, image)
    assert record["status"] == "error" and record["transient"] and "No space left" in record["error"]
    assert current(tmp_path, image)[1].startswith("transient failure retried")
    monkeypatch.setattr(pipeline, "write_indexed_png", real_write)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    record = run(tmp_path, broken)
    assert record["status"] == "error" and not record.get("transient")
    assert current(tmp_path, broken)[0]  # permanent until the file changes
    broken.write_bytes(b"\x89PNG still not")
    assert not current(tmp_path, broken)[0]


def test_time_limit_is_transient(tmp_path):
    image = photo(tmp_path / "a.png")
    job = Job(method="kmeans", params={"n_init": 50, "max_iter": 1000}, time_limit_s=0.001)
    record = run(tmp_path, image, job=job, method="kmeans")
    assert record["status"] == "error" and "time limit" in record["error"] and record["transient"]


def test_float_tiff_is_scaled_by_its_range(tmp_path):
    ramp = np.linspace(0, 1, 64 * 32, dtype=np.float32).reshape(32, 64)
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    pixels = load_image(tmp_path / "f.tif").pixels
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels[..., 0])) > 200


def test_prune_removes_only_what_is_provably_gone(tmp_path, monkeypatch):
    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    (images / "sub/here.png").write_bytes(b"x")
    assert not history.provably_gone(str(images), "sub/here.png")
    assert history.provably_gone(str(images), "sub/gone.png")
    assert history.provably_gone(str(images), "deleted folder/gone.png")
    real_scandir = os.scandir

    def unreadable(path="."):
        if os.fspath(path).endswith("sub"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_scandir(path)
    monkeypatch.setattr(history.os, "scandir", unreadable)
    assert not history.provably_gone(str(images), "sub/gone.png")  # cannot tell: kept
    monkeypatch.undo()
    shutil.rmtree(images)
    assert not history.provably_gone(str(images), "sub/here.png")  # the input folder is gone: unmounted?


def test_the_history_line_survives_a_full_disk(tmp_path, monkeypatch):
    results = str(tmp_path)
    history.begin(results, str(tmp_path), [], ["octree"])

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(history, "append_history", full)
    history.finish(results, [], ["octree"], status="ok")
    monkeypatch.undo()
    assert not (tmp_path / "history.jsonl").exists()
    kept = json.loads((tmp_path / ".history/current.json").read_text())
    assert kept["status"] == "ok" and kept["end"] and "No space left" in kept["note"]
    history.begin(results, str(tmp_path), [], ["octree"])  # the next night records it as it was
    (line,) = history.load_history(results)
    assert line["status"] == "ok" and line["end"] == kept["end"] and "next run" in line["note"]


def test_missing_results_are_listed_with_the_reason_from_their_log(tmp_path):
    logs = tmp_path / "logs"
    (logs / "octree").mkdir(parents=True)
    (logs / "octree/a.png.log").write_text("start\nKilled by signal 9\n")
    gone = outcome.missing(str(tmp_path / "results"), ["a.png", "b.png"], ["octree"],
                           lambda m, i: str(logs / m / f"{i}.log"), since=0)
    assert [g["image"] for g in gone] == ["a.png", "b.png"]
    assert "died" in gone[0]["reason"] and "Killed by signal 9" in gone[0]["reason"]
    assert gone[1]["reason"].startswith("not run")
    stub = outcome.missing_stub(gone[0], "in")
    assert stub["status"] == "error" and stub["missing"] and stub["image"]["path"] == "in/a.png"


def test_best_is_the_lowest_score_and_follows_changes(tmp_path):
    image = photo(tmp_path / "a.png")
    for method in ("octree", "median_cut"):
        run(tmp_path, image, job=Job(method=method), method=method)
    results = str(tmp_path / "results")
    written, index = update_best(results, ["a.png"], ["octree", "median_cut"])
    scores = {m: index["a.png"][m][2] for m in ("octree", "median_cut")}
    winner = min(scores, key=scores.get)
    best = json.loads((tmp_path / "results/best/a.png.json").read_text())
    assert written == 1 and best["best_of"]["method"] == winner and best["method"] == winner
    assert (tmp_path / f"results/best/a.png.png").read_bytes() == (tmp_path / f"results/{winner}/a.png.png").read_bytes()
    assert update_best(results, ["a.png"], ["octree", "median_cut"])[0] == 0  # nothing changed
    os.unlink(tmp_path / f"results/{winner}/a.png.json")
    update_best(results, ["a.png"], ["octree", "median_cut"])
    loser = next(m for m in scores if m != winner)
    assert json.loads((tmp_path / "results/best/a.png.json").read_text())["method"] == loser
