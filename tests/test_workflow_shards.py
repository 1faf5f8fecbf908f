"""Shard mode (config shard_size): a real Snakemake run on tiny photos with the fast methods.

One shard run and one per-image run of the same folder are shared by the module; the tests
compare them, then add an image, touch one and change the read options, checking each time
which shard jobs run and which records are rewritten.
"""

import csv
import os
import re
from pathlib import Path

import pytest
import yaml
from PIL import Image

from conftest import REPO, shard_jobs_of, snakemake, write_tiny_photos
from cq.discover import discover, result_path
from cq.record import read_record
from cq.shards import assign_shards

pytestmark = pytest.mark.slow

METHODS = ["octree", "median_cut"]
SHARD_SIZE = 2  # 5 images -> 4 shards (hash of the path), most of 1 or 2 images
BROKEN = "broken.jpg"


def config(shard_size: int) -> dict:
    return {"input_dir": "images", "results_dir": "results", "methods": METHODS, "shard_size": shard_size}


def planned(workdir: Path, *args: str) -> set[tuple[str, str]]:
    """(method, shard) of every quantize_shard job a run would do now (a dry run)."""
    done = snakemake(workdir, "--dry-run", *args)
    assert "rule quantize:" not in done.stdout
    return shard_jobs_of(done)


def records(workdir: Path) -> dict[str, int]:
    """Relative path -> mtime (ns) of every PNG and JSON result."""
    return {str(p.relative_to(workdir / "results")): p.stat().st_mtime_ns
            for m in METHODS for p in (workdir / "results" / m).rglob("*") if p.is_file()}


def shards_of(workdir: Path) -> dict[str, list[str]]:
    return assign_shards(discover(workdir / "images", ["jpg", "png"]).images, SHARD_SIZE)


def make_workspace(root: Path, name: str, shard_size: int) -> Path:
    workdir = root / name
    write_tiny_photos(workdir / "images")
    (workdir / "images" / BROKEN).write_bytes(b"\xff\xd8 not really a JPEG")
    (workdir / "test.yaml").write_text(yaml.safe_dump(config(shard_size)))
    return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(shard workspace, per-image workspace), each after one full run."""
    root = tmp_path_factory.mktemp("shards")
    sharded, per_image = make_workspace(root, "sharded", SHARD_SIZE), make_workspace(root, "per_image", 0)
    out = snakemake(sharded).stderr
    assert "rule quantize_shard" in out and "rule quantize:" not in out
    assert "rule shard_listing" not in out  # the run's start wrote the listings (cq.run.Run.start)
    out = snakemake(per_image).stderr
    assert "rule quantize:" in out and "rule quantize_shard" not in out
    return sharded, per_image


def test_same_results_layout_and_scores_as_one_job_per_image(runs):
    sharded, per_image = runs
    assert sorted(records(sharded)) == sorted(records(per_image))
    for path in records(sharded):
        if path.endswith(".json"):
            a, b = read_record(sharded / "results" / path), read_record(per_image / "results" / path)
            assert (a["status"], a["scores"], a["palette"], a["image"]["sha256"]) == (
                b["status"], b["scores"], b["palette"], b["image"]["sha256"])


def test_manifests_list_every_image_once(runs):
    sharded, _ = runs
    shards = shards_of(sharded)
    assert sum(len(v) for v in shards.values()) == 5 and len(shards) > 1
    for method in METHODS:
        for shard, images in shards.items():
            with open(sharded / f"results/shards/{method}/{shard}.tsv", newline="") as f:
                rows = list(csv.DictReader(f, dialect="excel-tab"))
            assert [r["image"] for r in rows] == images
            assert all(r["record"] == result_path("results", method, r["image"], ".json") for r in rows)


def test_report_is_complete(runs):
    sharded, per_image = runs
    images = discover(sharded / "images", ["jpg", "png"]).images
    for workdir in runs:
        with open(workdir / "results/report.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted((r["image"], r["method"]) for r in rows) == sorted(
            (image, m) for image in images for m in METHODS)
    assert (sharded / "results/report.html").stat().st_size > 0


def test_corrupt_image_is_an_error_record_and_its_shard_mates_are_fine(runs):
    sharded, _ = runs
    shard, mates = next((s, v) for s, v in shards_of(sharded).items() if BROKEN in v)
    assert len(mates) > 1, "the stable hash gives the corrupt image shard-mates to check"
    for method in METHODS:
        record = read_record(sharded / f"results/{method}/{BROKEN}.json")
        assert record["status"] == "error" and BROKEN in record["error"]
        assert not (sharded / f"results/{method}/{BROKEN}.png").exists()
        for image in mates:
            if image != BROKEN:
                assert read_record(sharded / result_path("results", method, image, ".json"))["status"] == "ok"
        log = (sharded / f"results/logs/shards/{method}/{shard}.log").read_text()
        assert f"{method} on {BROKEN}: error" in log


def test_second_run_has_nothing_to_do(runs):
    sharded, _ = runs
    assert "Nothing to be done" in snakemake(sharded, "--dry-run").stdout


def test_added_image_runs_one_shard_per_method_and_recomputes_only_it(runs):
    sharded, _ = runs
    before = records(sharded)
    created = {p: read_record(sharded / "results" / p)["created"] for p in before if p.endswith(".json")}
    added = "extra/COPY.PNG"
    (sharded / "images/extra").mkdir()
    Image.open(sharded / "images/rocket.png").transpose(Image.FLIP_TOP_BOTTOM).save(sharded / "images" / added)
    shard = next(s for s, images in shards_of(sharded).items() if added in images)
    assert planned(sharded) == {(m, shard) for m in METHODS}
    listing = (sharded / f"results/shards/_images/{shard}.tsv").read_text()
    assert "rule shard_listing" not in snakemake(sharded).stderr
    assert added in (sharded / f"results/shards/_images/{shard}.tsv").read_text() and added not in listing
    after = records(sharded)
    assert {p: after[p] for p in before} == before  # no other PNG or record rewritten
    assert {p: read_record(sharded / "results" / p)["created"] for p in created} == created
    assert set(after) - set(before) == {f"{m}/{added}{s}" for m in METHODS for s in (".json", ".png")}
    for method in METHODS:
        log = (sharded / f"results/logs/shards/{method}/{shard}.log").read_text()
        assert re.search(r"images, 1 recomputed, \d+ kept", log), log
    report = (sharded / "results/report.csv").read_text()
    assert all(f"{added},{m}," in report for m in METHODS)
    assert "Nothing to be done" in snakemake(sharded, "--dry-run").stdout


def test_touched_image_reruns_nothing(runs):
    sharded, _ = runs
    before = records(sharded)
    os.utime(sharded / "images" / 'Ünï côdé/astro "naut" <script>.png')
    assert planned(sharded) == set()
    assert "Nothing to be done" in snakemake(sharded).stderr
    # Nothing recomputed: the PNGs are untouched (the touched image's record stores its new stat).
    assert {p: t for p, t in records(sharded).items() if p.endswith(".png")} == \
        {p: t for p, t in before.items() if p.endswith(".png")}


def test_changed_read_options_recompute_every_record(runs):
    sharded, _ = runs
    before = records(sharded)
    override = sharded / "override.yaml"
    override.write_text(yaml.safe_dump({"read": {"background": [0, 0, 0], "max_pixels": 10**8}}))
    args = ("--configfile", str(REPO / "config/config.yaml"), str(sharded / "test.yaml"), str(override))
    assert planned(sharded, *args) == {(m, s) for m in METHODS for s in shards_of(sharded)}
    snakemake(sharded, *args)
    after = records(sharded)
    assert all(after[p] != before[p] for p in before if p.endswith(".json")), "a record was kept"


def test_a_dry_run_writes_nothing(tmp_path):
    workdir = make_workspace(tmp_path, "fresh", SHARD_SIZE)
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    assert planned(workdir)  # every shard job would run...
    after = sorted(p.relative_to(workdir) for p in workdir.rglob("*") if ".snakemake" not in p.parts)
    assert after == before  # ...and nothing was written, not even the shards' listings
