"""cq.shards: shard assignment, listings, manifests, and the keep policy of a shard job."""

import os

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_photo, touch
from cq.discover import result_path
from cq.fsutil import write_if_changed
from cq.config import scaled, time_limit_s
from cq.pipeline import Job
from cq.record import read_record
from cq.shards import (AUTO_PER_IMAGE_MAX, AUTO_SHARD_SIZE, assign_shards, listing_path, manifest_path,
                       read_listing, read_manifest, resolve_shard_size, run_shard, shard_count, shard_index,
                       shard_listing, shard_name, shard_runtime, write_listing)


def test_shard_size_auto_and_explicit():
    assert resolve_shard_size("auto", AUTO_PER_IMAGE_MAX) == 0
    assert resolve_shard_size("auto", AUTO_PER_IMAGE_MAX + 1) == AUTO_SHARD_SIZE
    assert resolve_shard_size(None, 10) == 0
    assert resolve_shard_size(0, 10**6) == 0 and resolve_shard_size(7, 3) == 7
    with pytest.raises(ValueError):
        resolve_shard_size(-1, 10)


def test_shard_count_is_a_power_of_two_with_at_most_shard_size_images_on_average():
    assert [shard_count(n, 10) for n in (0, 1, 10, 11, 20, 21, 40, 41)] == [1, 1, 1, 2, 2, 4, 4, 8]
    for n in (1, 999, 1000, 1001, 100_000):
        count = shard_count(n, 500)
        assert count & (count - 1) == 0 and n / count <= 500 and (count == 1 or n / count > 250)


def test_shard_index_is_stable_and_splits_in_two_when_the_count_doubles():
    images = [f"f{i // 100:03d}/img {i}.jpg" for i in range(2000)]
    assert shard_index("a.jpg", 1) == 0
    for image in images:
        i = shard_index(image, 64)
        assert shard_index(image, 128) in (i, i + 64)
    sizes = [len(v) for v in assign_shards(images, 100).values()]
    assert len(sizes) == 32 and sum(sizes) == 2000 and max(sizes) < 2 * 2000 / 32  # evenly spread


def test_shard_index_known_values():
    # The same in every process and Python version (not the salted hash()); pinned so that a
    # change of the hash, which would move every image to another shard, is noticed.
    assert [shard_index(name, 1 << 20) for name in ("a.jpg", "space/rocket.jpg")] == [173961, 24324]


def test_adding_an_image_changes_one_shard_only():
    images = [f"img{i:05d}.png" for i in range(3000)]
    before = assign_shards(images, 500)
    after = assign_shards(sorted(images + ["new/one.png"]), 500)
    changed = [name for name in after if after[name] != before.get(name)]
    assert len(changed) == 1 and "new/one.png" in after[changed[0]]
    assert set(before) <= set(after)


def test_shard_names_are_zero_padded_and_sorted():
    assert shard_name(7, 64) == "0007" and shard_name(12345, 65536) == "12345"
    names = list(assign_shards([f"{i}.png" for i in range(100)], 10))
    assert names == sorted(names) and all(len(n) == 4 for n in names)


def test_listing_changes_when_an_image_joins_and_round_trips_odd_names(tmp_path):
    names = ['a.png', 'tab\there.png', 'quo"te.png', 'Ünï côdé/été.png', "{1} <x>.png"]
    out = tmp_path / "out/0000.tsv"
    assert write_if_changed(out, shard_listing(names)) is True
    assert read_listing(out) == names
    mtime = out.stat().st_mtime_ns
    assert write_if_changed(out, shard_listing(names)) is False  # a touch or new content: the records say
    assert out.stat().st_mtime_ns == mtime
    assert write_if_changed(out, shard_listing(names + ["new.png"])) is True
    assert [p.name for p in out.parent.iterdir()] == ["0000.tsv"]  # no temporary file left


def test_attempt_scaling_and_shard_runtime():
    assert [scaled(2000, attempt) for attempt in (1, 2, 3)] == [2000, 4000, 6000]
    assert shard_runtime(30, 10, 1440) == 300  # the method's runtime for each image
    assert shard_runtime(30, 100, 1440) == 1440  # at most the cap
    assert shard_runtime(30, 100, 1440, attempt=2) == 2880  # more on a retry
    assert shard_runtime(60, 1, 10) == 60  # never under one image's runtime
    assert shard_runtime(30, 0, 1440) == 30


def test_the_time_limit_leaves_the_job_time_to_write_its_record():
    # 90% of the wall time, and at least 20 s less: a scheduler kills at the wall time.
    assert [time_limit_s(minutes) for minutes in (1, 2, 30)] == [40.0, 100.0, 1620.0]
    assert time_limit_s(0.01) == 1.0


# --- one shard job: what is kept, what is recomputed --------------------------------------

SPEC = Job(method="octree").to_spec()


@pytest.fixture
def shard(tmp_path):
    """A folder of 3 images (one corrupt) and the paths of one shard job over them."""
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["a.png", "b.png"]):
        Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100 + 10 * i, 100)))).save(images / name)
    (images / "bad.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    results = str(tmp_path / "results")
    listing = listing_path(results, "0000")
    write_listing(listing, ["a.png", "b.png", "bad.jpg"])
    return {"images": images, "results": results, "listing": listing,
            "manifest": manifest_path(results, "octree", "0000")}


def run(shard, spec=SPEC, manifest=None, listing=None):
    return run_shard(listing or shard["listing"], manifest or shard["manifest"], str(shard["images"]),
                     str(shard["results"]), spec, 60)


def record_mtimes(shard) -> dict[str, int]:
    return {name: os.stat(result_path(shard["results"], "octree", name, ".json")).st_mtime_ns
            for name in ("a.png", "b.png", "bad.jpg")}


def test_first_run_writes_every_record_and_the_manifest(shard):
    assert run(shard) == []
    rows = read_manifest(shard["manifest"])
    assert {image: row["status"] for image, row in rows.items()} == {"a.png": "ok", "b.png": "ok", "bad.jpg": "error"}
    assert rows["a.png"]["record"] == result_path(shard["results"], "octree", "a.png", ".json")
    assert read_record(rows["bad.jpg"]["record"])["status"] == "error"


def test_a_rerun_keeps_ok_and_error_records_of_the_same_job(shard):
    run(shard)
    before = record_mtimes(shard)
    os.unlink(shard["manifest"])  # as Snakemake does before it reruns the job
    assert run(shard) == []
    assert record_mtimes(shard) == before  # the error record too: a corrupt file stays corrupt
    assert set(read_manifest(shard["manifest"])) == {"a.png", "b.png", "bad.jpg"}


def test_a_changed_image_is_recomputed_alone(shard):
    run(shard)
    before = record_mtimes(shard)
    Image.fromarray(np.ascontiguousarray(tiny_photo("rocket", (200, 200)))).save(shard["images"] / "bad.jpg")
    run(shard)
    after = record_mtimes(shard)
    assert after["bad.jpg"] != before["bad.jpg"] and {k: after[k] for k in ("a.png", "b.png")} == {
        k: before[k] for k in ("a.png", "b.png")}
    assert read_manifest(shard["manifest"])["bad.jpg"]["status"] == "ok"


def test_another_spec_recomputes_even_the_error_records(shard):
    run(shard)
    before = record_mtimes(shard)
    other = {**SPEC, "read": {**SPEC["read"], "background": [0, 0, 0]}}  # not in the records
    run(shard, spec=other)
    after = record_mtimes(shard)
    assert all(after[name] != before[name] for name in before)


def test_when_the_shard_count_doubles_the_new_shards_keep_every_record(shard):
    run(shard)
    before = record_mtimes(shard)
    # Twice the shards: the images of shard 0000 split between two new shards, whose jobs have
    # no previous manifest; the records (same job, same content) are kept.
    halves = {"0000": ["a.png", "bad.jpg"], "0001": ["b.png"]}
    for name, images in halves.items():
        listing = listing_path(shard["results"], name)
        write_listing(listing, images)
        assert run(shard, manifest=manifest_path(shard["results"], "octree", name), listing=listing) == []
    assert record_mtimes(shard) == before


def test_a_record_that_cannot_be_written_fails_the_shard_without_a_manifest(shard, monkeypatch):
    import cq.record

    real = cq.record.atomic_write_bytes

    def full_disk(path, data, **kwargs):
        if "b.png" in str(path):
            raise OSError(28, "No space left on device")
        return real(path, data, **kwargs)

    monkeypatch.setattr(cq.record, "atomic_write_bytes", full_disk)
    failed = run(shard)
    assert len(failed) == 1 and failed[0].startswith("b.png: OSError")
    assert not os.path.exists(shard["manifest"])
    assert read_record(result_path(shard["results"], "octree", "a.png", ".json"))["status"] == "ok"


# --- many images a call (cnn on a GPU): the shard trains them in batches ---------------------

def batching_cnn(monkeypatch, size):
    """cnn registered with a batch of ``size`` images (on a GPU it is 16; on the CPU 1), its
    batch and one-image calls counted."""
    import dataclasses

    import cq.methods as registry

    cnn = registry.get_method("cnn")
    calls = {"batch": [], "one": 0}

    def batch(problems, **params):
        calls["batch"].append(len(problems))
        return cnn.batch(problems, **params)

    def one(problem, **params):
        calls["one"] += 1
        return cnn.fn(problem, **params)

    monkeypatch.setitem(registry._REGISTRY, "cnn", dataclasses.replace(
        cnn, fn=one, batch=batch, batch_size=lambda **params: size))
    return calls


def test_a_batching_method_trains_the_shard_in_batches_and_skips_current_records(shard, monkeypatch):
    calls = batching_cnn(monkeypatch, 2)
    spec = Job(method="cnn", params={"epochs": 2, "steps_per_epoch": 2, "finish": 0}).to_spec()
    manifest = manifest_path(shard["results"], "cnn", "0000")
    assert run(shard, spec, manifest) == []
    rows = read_manifest(manifest)
    assert {image: row["status"] for image, row in rows.items()} == {"a.png": "ok", "b.png": "ok", "bad.jpg": "error"}
    # a.png and b.png in one batch; the batch of bad.jpg failed to load, so it ran alone (and failed).
    assert calls["batch"] == [2] and calls["one"] == 0
    record = read_record(rows["a.png"]["record"])
    assert record["extras"]["curve"][0] == record["extras"]["init_score"]
    run(shard, spec, manifest)  # every record current: nothing trained again
    assert calls["batch"] == [2] and calls["one"] == 0
