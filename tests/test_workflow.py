"""The Snakemake workflow, run for real on tiny photographs with the fast methods.

One run is shared by the module (Snakemake start-up costs seconds); the tests after it check
its outputs, then what a second run, a touched image or changed parameters would redo.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, jobs_of, snakemake, tiny_photo, write_tiny_photos
from cq.discover import result_key
from cq.record import read_record

pytestmark = pytest.mark.slow

METHODS = ["kmeans", "median_cut", "octree", "kmeans_1init"]
CONFIG = {
    "input_dir": "images",
    "results_dir": "results",
    "methods": METHODS,
    "variants": {"kmeans_1init": {"method": "kmeans", "n_init": 1}},
}
BROKEN = "broken.jpg"
# Snakemake 9 reads "<name>" in a path as a path variable: never shown it (cq.discover.result_key).
PATHVAR = "<logs>.png"
# A name over the 255 bytes a file system allows once ".json" is added: its results go to a
# shortened key (cq.discover.result_key), its input stays itself.
LONG = "long " + "é" * 120 + ".png"


def planned(workdir: Path, *args: str) -> set[tuple[str, str]]:
    """(method, result key) of every quantize job that a run would do now (a dry run)."""
    return jobs_of(snakemake(workdir, "--dry-run", *args))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workspace with tiny photos and one corrupt file, after one full run."""
    workdir = tmp_path_factory.mktemp("workflow")
    images = write_tiny_photos(workdir / "images")
    for name in (PATHVAR, LONG):
        Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100, 100)))).save(workdir / "images" / name)
    images = sorted(images + [PATHVAR, LONG])
    (workdir / "images" / BROKEN).write_bytes(b"\xff\xd8 not really a JPEG")
    (workdir / "images" / ".hidden.png").write_bytes(b"")
    (workdir / "test.yaml").write_text(yaml.safe_dump(CONFIG))
    done = snakemake(workdir)
    return workdir, images, done


def test_every_good_image_gets_a_37_colour_png_and_a_record(run):
    workdir, images, _ = run
    for method in METHODS:
        for image in images:
            stem = workdir / "results" / method / result_key(image)
            record = read_record(f"{stem}.json")
            assert record["status"] == "ok", record["error"]
            assert record["method"] == method and record["n_colors"] == 37
            colours = np.asarray(Image.open(f"{stem}.png").convert("RGB")).reshape(-1, 3)
            assert len(np.unique(colours, axis=0)) == 37
            assert record["image"]["path"] == f"images/{image}"
            # Logs and benchmarks follow the results folder (logs_dir, benchmarks_dir unset).
            assert (workdir / "results/logs" / method / f"{result_key(image)}.log").exists()
            assert (workdir / "results/benchmarks" / method / f"{result_key(image)}.tsv").exists()
    assert read_record(workdir / "results/kmeans_1init/chelsea.jpg.json")["params"]["n_init"] == 1
    assert not (workdir / "results/kmeans/.hidden.png.json").exists()


def test_bad_image_gives_error_records_and_the_report_lists_it(run):
    workdir, _, _ = run
    for method in METHODS:
        record = read_record(workdir / "results" / method / f"{BROKEN}.json")
        assert record["status"] == "error" and BROKEN in record["error"]
        assert not (workdir / "results" / method / f"{BROKEN}.png").exists()
    with open(workdir / "results/report.csv", newline="", encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["image"] == BROKEN]
    assert sorted(row["method"] for row in rows) == sorted(METHODS)
    assert all(row["status"] == "error" and BROKEN in row["error"] for row in rows), rows
    assert BROKEN in (workdir / "results/report.html").read_text(encoding="utf-8")


def test_logs_carry_cq_logging(run):
    workdir, _, _ = run
    assert "INFO cq: kmeans on" in (workdir / "results/logs/kmeans/chelsea.jpg.log").read_text()


def test_second_run_has_nothing_to_do(run):
    workdir, _, _ = run
    out = snakemake(workdir, "--dry-run").stdout
    assert "Nothing to be done" in out, out


def test_changed_parameters_rerun_only_that_method(run, tmp_path):
    workdir, images, _ = run
    override = workdir / "override.yaml"
    override.write_text(yaml.safe_dump({"kmeans": {"n_init": 2}}))
    jobs = planned(workdir, "--configfile", str(REPO / "config/config.yaml"), str(workdir / "test.yaml"),
                   str(override))
    assert jobs == {("kmeans", result_key(image)) for image in [*images, BROKEN]}


def test_changed_image_reruns_only_its_jobs_and_the_report(run):
    workdir, _, _ = run
    image = 'Ünï côdé/astro "naut" <script>.png'
    path = workdir / "images" / image
    os.utime(path)  # a touch alone changes nothing: Snakemake compares small files' checksums
    assert planned(workdir) == set()
    Image.fromarray(np.asarray(Image.open(path))[::-1].copy()).save(path)
    report_mtime = (workdir / "results/report.csv").stat().st_mtime
    assert planned(workdir) == {(method, result_key(image)) for method in METHODS}
    snakemake(workdir)
    assert (workdir / "results/report.csv").stat().st_mtime > report_mtime
    assert "Nothing to be done" in snakemake(workdir, "--dry-run").stdout


def test_added_image_runs_its_jobs(run):
    workdir, _, _ = run
    added = workdir / "images/extra/COPY.PNG"
    added.parent.mkdir()
    Image.open(workdir / "images/rocket.png").save(added)
    try:
        assert planned(workdir) == {(method, "extra/COPY.PNG") for method in METHODS}
    finally:
        added.unlink()


def test_corrupt_record_is_listed_by_the_report(run):
    workdir, _, _ = run
    record = workdir / "results/octree/chelsea.jpg.json"
    record.write_text('{"truncated": ')
    snakemake(workdir, "--forcerun", "report", "--allowed-rules", "report", "all")
    rows = (workdir / "results/report.csv").read_text().splitlines()
    bad = [row for row in rows if row.startswith("chelsea.jpg,octree,")]
    assert len(bad) == 1 and ",error," in bad[0] and "cannot read record" in bad[0]


def test_lint_is_clean(run):
    workdir, _, _ = run
    done = snakemake(workdir, "--lint")
    out = done.stdout + done.stderr
    assert "Congratulations" in out and "Lints for" not in out, out


@pytest.mark.parametrize("config, named", [
    ("bogus_key=1", "bogus_key"),
    ("methods=[kmeans,no_such_method]", "no_such_method"),
    ("variants={kmeans_1init: {n_inits: 3}}", "n_inits"),
    ("extensions=jpg", "extensions"),
])
def test_bad_config_stops_the_run_naming_the_key(run, config, named):
    workdir, _, _ = run
    done = snakemake(workdir, "--dry-run", "--config", config, check=False)
    assert done.returncode != 0
    assert named in done.stderr + done.stdout


def test_records_name_the_input_file(run):
    workdir, _, _ = run
    for name in ("rocket.jpg", "rocket.png"):  # one stem, two files, two results
        data = json.loads((workdir / "results/median_cut" / f"{name}.json").read_text())
        assert data["image"]["path"] == f"images/{name}"


@pytest.mark.parametrize("override, named", [
    ({"k": 300}, "config: k: 300 is greater than the maximum of 256"),
    ({"k": 0}, "config: k: 0 is less than the minimum of 1"),
    ({"weights": {"mse": 2, "max_cost": float("nan"), "mean_cost": 42}}, "max_cost must be a finite number"),
    ({"weights": {"mse": 2, "max_cost": 21, "mean_cost": -1}}, "mean_cost"),
    ({"kmeans": {"n_inits": 2}}, "unknown parameter 'n_inits'"),
    ({"kmean": {}}, "'kmean' is neither a setting nor a registered method"),
])
def test_bad_settings_in_a_config_file_stop_the_run_before_any_job(run, override, named):
    workdir, _, _ = run
    bad = workdir / "bad.yaml"
    bad.write_text(yaml.safe_dump(override))
    done = snakemake(workdir, "--configfile", str(REPO / "config/config.yaml"), str(workdir / "test.yaml"),
                     str(bad), check=False)
    assert done.returncode != 0 and named in done.stderr, done.stderr
    assert "rule quantize" not in done.stderr  # stopped before any job
    assert "$schema" not in done.stderr  # one line, not the whole schema
