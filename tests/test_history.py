"""The run history around the workflow: the prune guard, the line of a failed run, and which
results are this run's (by the run's start mark, never by how long a start took)."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import snakemake, tiny_photo
import os

from cq import history, outcome
from cq.discover import result_path


def test_prune_deleted_never_prunes_when_no_image_is_found(tmp_path, caplog):
    """An empty or unmounted input folder looks like every image deleted: nothing goes."""
    images, results = tmp_path / "images", str(tmp_path / "results")
    images.mkdir()
    (images / "a.png").write_bytes(b"a")
    record = tmp_path / result_path("results", "octree", "a.png", ".json")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    history.begin(results, str(images), ["a.png"], ["octree"])
    history.finish(results, ["a.png"], ["octree"])
    (images / "a.png").unlink()
    run = history.begin(results, str(images), [], ["octree"], prune_deleted=True)
    assert run["counts"]["deleted"] == 1 and run["pruned"] == 0
    assert record.exists()
    assert "nothing is pruned" in caplog.text
    history.finish(results, [], ["octree"])
    # With an image still there, the deleted one's results go.
    (images / "b.png").write_bytes(b"b")
    assert history.begin(results, str(images), ["b.png"], ["octree"], prune_deleted=True)["pruned"] == 0
    history.finish(results, ["b.png"], ["octree"])
    (images / "b.png").unlink()
    (images / "c.png").write_bytes(b"c")
    record_b = tmp_path / result_path("results", "octree", "b.png", ".json")
    record_b.write_text("{}")
    assert history.begin(results, str(images), ["c.png"], ["octree"], prune_deleted=True)["pruned"] == 1
    assert not record_b.exists()


def _record(path, status, mtime_ns):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"status": status, "method": "octree", "wall_time_s": 1.5,
                                "image": {"path": str(path)}, "error": None if status == "ok" else "bad"}))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_this_runs_results_are_those_written_since_its_start_mark(tmp_path):
    """Regression (issue 19.2): an error record, or a folder in a record's place, made a moment
    before the run, was counted as the run's own when the run's start was within 1 s of it, so
    the history said "failed" or "error" depending on the machine's load. The start mark is a
    file's mtime: a nanosecond before it is another run's, at it or after is this run's."""
    results = str(tmp_path / "results")
    images = ["old.png", "new.png", "gone.png"]
    since = history.mark_start(results)
    old = tmp_path / result_path("results", "octree", "old.png", ".json")
    new = tmp_path / result_path("results", "octree", "new.png", ".json")
    _record(old, "error", since - 1)
    _record(new, "ok", since)
    assert not history.written_this_run(str(old), since) and history.written_this_run(str(new), since)
    records, missing = history._records_since(results, images, ["octree"], since)
    assert [r["status"] for r in records] == ["ok"] and missing == 1
    assert history.tally(records, ["octree"]) == {"failed": 0, "failed_images": 0, "time_per_method": {"octree": 1.5}}
    index = {"old.png": {"octree": [[since - 1, 0, 0], "error", None, "bad"]},
             "new.png": {"octree": [[since, 0, 0], "ok", 1.0, None]}}
    counts = outcome.count_results(index, ["octree"], since)
    assert (counts["ok_this_run"], counts["failed_this_run"], counts["failed"]) == (1, 0, 1)
    # Only the old error record and nothing of this run: the run did not fail, it did nothing.
    del index["new.png"]
    summary = {**outcome.count_results(index, ["octree"], since), "missing": 0}
    assert outcome.status_of(summary, "error") == "error" and outcome.status_of(summary, "ok") == "ok"


def test_the_start_mark_is_the_file_systems_clock_and_only_grows(tmp_path):
    results = str(tmp_path / "results")
    first = history.mark_start(results)
    probe = tmp_path / "probe"
    probe.write_text("x")
    second = history.mark_start(results)
    assert first <= probe.stat().st_mtime_ns <= second
    line = history.begin(results, str(tmp_path), [], ["octree"])
    assert line["since_ns"] >= second and history.since_ns(line) == line["since_ns"]
    assert history.since_ns({"start": "2026-01-02T03:04:05+00:00"}) == 1767323045 * 10**9  # an older line


@pytest.mark.slow
def test_a_run_whose_job_fails_ends_its_history_line_with_error(tmp_path):
    """Snakemake's onerror hook: a job that fails (its record cannot be written) gives the
    run's history line the status "error", not "ok"."""
    (tmp_path / "images").mkdir()
    Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100, 100)))).save(tmp_path / "images/a.png")
    config = {"input_dir": "images", "results_dir": "results", "methods": ["octree"], "shard_size": 1}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    # A folder where the record goes: the shard job writes every record it can, then fails.
    (tmp_path / "results/octree/a.png.json").mkdir(parents=True)
    done = snakemake(tmp_path, check=False)
    assert done.returncode != 0
    assert "could not be written" in (tmp_path / "results/logs/shards/octree/0000.log").read_text() + done.stderr
    lines = (tmp_path / "results/history.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["error"]


# --- issue 18 -------------------------------------------------------------------------------

def test_a_kill_while_writing_in_history_leaves_no_temporary_for_good(tmp_path):
    """A kill while .history/outcome.json (or current.json) was being written leaves its
    temporary; the end of the next run removes it, like every other one."""
    images, results = tmp_path / "images", tmp_path / "results"
    images.mkdir()
    state = results / ".history"
    state.mkdir(parents=True)
    left = [state / ".outcome.json.k1ll3d.tmp", state / ".current.json.x.tmp", results / "octree/.a.png.png.y.tmp"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half")
    history.begin(str(results), str(images), [], ["octree"])
    history.finish(str(results), [], ["octree"])
    assert [p for p in left if p.exists()] == []
    assert (state / "current.json").exists() and (state / "snapshot.json").exists()


def test_a_run_finds_its_waiting_line_by_id_not_by_time(tmp_path, monkeypatch):
    """A full disk keeps a run's line in current.json; `ended` is true for that run's id
    only, whatever the clock says (a line waiting from a run that ended a second ago, or
    in the future after a clock step, is another run's)."""
    import errno

    images, results = tmp_path / "images", str(tmp_path / "results")
    images.mkdir()
    monkeypatch.setenv("CQ_LOCK_TOKEN", "night-1")
    assert history.begin(results, str(images), [], ["octree"])["id"] == "night-1"

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(history, "append_history", full)
        assert "No space left" in history.finish(results, [], ["octree"])["note"]
    assert history.ended(results, "night-1")
    assert not history.ended(results, "night-2") and not history.ended(results, None)
    run = history.begin(results, str(images), [], ["octree"], run_id="night-2")
    assert run["id"] == "night-2" and not history.ended(results, "night-2")
    assert [r["id"] for r in history.load_history(results)] == ["night-1"]  # appended, by the next run
