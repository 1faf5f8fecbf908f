"""Nightly runs (profiles/nightly, cq/history.py): only new or changed images are processed,
every run appends its history line (an idle night too), deleted images leave the report and are
pruned on request, and the report shows the history.

One workspace is shared by the module; the tests run in order, each one a night.
"""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import NIGHTLY, jobs_of, nightly, tiny_photo, write_tiny_photos
from cq.history import in_progress, load_history

pytestmark = pytest.mark.slow

METHODS = ["median_cut", "octree"]
BIG = "scans/big scan.bmp"  # over 1 MB: Snakemake's default compares only times for it


def record_times(results: Path) -> dict[str, int]:
    return {str(p.relative_to(results)): p.stat().st_mtime_ns for p in results.glob("*/**/*.json")
            if p.parts[len(results.parts)] in METHODS}


def write_config(workdir: Path, **extra) -> None:
    config = {"input_dir": "images", "results_dir": "results", "methods": METHODS, **extra}
    (workdir / "test.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A workspace after its first night: 4 tiny photos, a 1.3 MB BMP and a broken file."""
    workdir = tmp_path_factory.mktemp("nightly")
    images = workdir / "images"
    write_tiny_photos(images)
    big = np.tile(tiny_photo("chelsea", (100, 120)), (19, 15, 1))  # 608 x 720
    (images / BIG).parent.mkdir()
    Image.fromarray(np.ascontiguousarray(big)).save(images / BIG)
    assert (images / BIG).stat().st_size > 1_000_000
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    write_config(workdir)
    done = nightly(workdir)
    return workdir, done


def test_first_night_processes_everything_under_the_nightly_profile(night):
    workdir, done = night
    assert f"Using workflow specific profile {NIGHTLY}" in done.stderr
    (run,) = load_history(workdir / "results")
    # Settings of profiles/nightly, not of profiles/default (latency 30, no forced report).
    assert run["settings"]["latency_wait"] == 5 and run["settings"]["forcerun"] == ["report"]
    assert run["settings"]["rerun_triggers"] == ["input"]
    assert run["settings"]["keep_going"] and run["settings"]["rerun_incomplete"]
    assert run["status"] == "ok" and run["images"] == 6
    assert run["counts"] == {"new": 6, "changed": 0, "unchanged": 0, "deleted": 0, "failed": 2, "missing": 0}
    assert set(run["time_per_method"]) == set(METHODS) and all(t > 0 for t in run["time_per_method"].values())
    assert len(jobs_of(done)) == 12


def test_a_night_with_nothing_new_runs_only_the_report_and_still_logs(night):
    workdir, _ = night
    results = workdir / "results"
    before = record_times(results)
    done = nightly(workdir)
    assert jobs_of(done) == set() and "(Rule: report)" in done.stderr
    assert record_times(results) == before
    runs = load_history(results)
    assert len(runs) == 2
    assert runs[-1]["counts"] == {"new": 0, "changed": 0, "unchanged": 6, "deleted": 0, "failed": 0, "missing": 0}
    assert runs[-1]["time_per_method"] == {m: 0.0 for m in METHODS}
    # The report built by this run shows the runs finished before it (the first night), as a
    # table and a chart, and never a run as "running" (its own line is added when it ends).
    page = (results / "report.html").read_text()
    history = page[page.index('<h2 id="history">'):page.index("<footer>")]
    assert runs[0]["start"] in history and runs[-1]["start"] not in history and "running" not in history
    assert "<svg" in history and history.count("<tr><td>") == 1


def test_touched_photos_rerun_nothing_even_over_1_mb_in_either_profile(night):
    workdir, _ = night
    later = time.time() + 5
    for path in (workdir / "images").rglob("*"):
        if path.is_file():
            os.utime(path, (later, later))
    assert jobs_of(nightly(workdir, "--dry-run")) == set()
    # The record decides in profiles/default too (no mtime trigger): the touched BMP, over
    # Snakemake's 1 MB checksum limit, reruns nothing there either.
    assert jobs_of(nightly(workdir, "--dry-run", profile=False)) == set()


def test_new_changed_and_deleted_images(night):
    workdir, _ = night
    images, results = workdir / "images", workdir / "results"
    Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100, 100)))).save(images / "new one.png")
    changed = images / "rocket.png"
    Image.fromarray(np.asarray(Image.open(changed))[::-1].copy()).save(changed)
    (images / "chelsea.jpg").unlink()
    done = nightly(workdir)
    assert jobs_of(done) == {(m, i) for m in METHODS for i in ("new one.png", "rocket.png")}
    run = load_history(results)[-1]
    assert run["counts"] == {"new": 1, "changed": 1, "unchanged": 4, "deleted": 1, "failed": 0, "missing": 0}
    assert run["deleted_images"] == ["chelsea.jpg"] and run["pruned"] == 0
    csv = (results / "report.csv").read_text()
    assert "chelsea.jpg" not in csv and "new one.png" in csv
    assert (results / "octree/chelsea.jpg.json").exists()  # kept: prune_deleted is false


def test_prune_deleted_removes_the_results_of_deleted_images(night):
    workdir, _ = night
    results = workdir / "results"
    write_config(workdir, prune_deleted=True)
    try:
        (workdir / "images/rocket.jpg").unlink()
        nightly(workdir)
    finally:
        write_config(workdir)
    run = load_history(results)[-1]
    # 2 methods x (png, json, log, tsv) + best/ (png, json)
    assert run["counts"]["deleted"] == 1 and run["pruned"] == 10
    for method in METHODS:
        assert not list((results / method).glob("rocket.jpg.*"))
        assert not (results / "logs" / method / "rocket.jpg.log").exists()
        assert (results / method / "rocket.png.json").exists()
    assert not list((results / "best").glob("rocket.jpg.*")) and (results / "best/rocket.png.png").exists()
    assert (results / "octree/chelsea.jpg.json").exists()  # deleted before: not this run's to prune
    assert "rocket.jpg" not in (results / "report.csv").read_text()


def test_history_file_is_one_json_object_per_line(night):
    workdir, _ = night
    lines = (workdir / "results/history.jsonl").read_text().splitlines()
    assert len(lines) == 4 and all(json.loads(line)["status"] == "ok" for line in lines)
    assert in_progress(workdir / "results") is None


# --- cq.history without Snakemake -------------------------------------------------------------

def test_a_touch_is_unchanged_and_other_content_is_changed(tmp_path):
    from cq.history import compare, scan

    (tmp_path / "a.png").write_bytes(b"a")
    (tmp_path / "b.png").write_bytes(b"b")
    first = scan(str(tmp_path), ["a.png", "b.png"], {})
    os.utime(tmp_path / "a.png", (1, 1))
    (tmp_path / "b.png").write_bytes(b"B")
    (tmp_path / "c.png").write_bytes(b"c")
    second = scan(str(tmp_path), ["a.png", "b.png", "c.png"], first)
    assert compare(first, second) == ({"new": 1, "changed": 1, "unchanged": 1, "deleted": 0}, [])
    assert compare(second, scan(str(tmp_path), ["c.png"], second))[1] == ["a.png", "b.png"]
