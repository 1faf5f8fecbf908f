"""Faults a night must survive, through `cq nightly` (the documented nightly command): the
run killed mid-job (SIGKILL) and rerun with no unlock, a second run from another working
directory refused, a job killed (the report is still built and lists it), a full disk
(transient: retried next night, the history line kept), other content with the same or an
older mtime and a changed k with no .snakemake metadata (redone), output folders inside the
input folder (refused); and, without Snakemake, a full disk while writing, a GPU out of
memory (tests/test_cnn.py::test_cuda_out_of_memory_falls_back_to_cpu), a reader during a
report write.
"""

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cq.fsutil
from conftest import (cq_nightly, cq_nightly_command, env, held_env, jobs_of, nightly, tiny_photo,
                      tmpfs, write_tiny_photos)
from cq.discover import result_key
from cq.freshness import file_sha256
from cq.history import in_progress, load_history
from cq.pipeline import Job, quantize_file
from cq.record import read_record

SLOW = "slow.jpg"  # 24 megapixels: median_cut takes seconds on it, long enough to be killed in



def fill_disk(path, block: int) -> None:
    """Write ``block``-byte pieces to ``path`` until the file system is full (ENOSPC)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * block)
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)

def wait_for(condition, timeout=120.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def results_are_whole(results: Path) -> None:
    """Every record and PNG in the results parses in full; temporaries are hidden files."""
    for path in results.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(results).parts) or not path.is_file():
            continue
        if path.suffix == ".json" and path.parent != results:
            read_record(path)
        elif path.suffix == ".png" and "report_files" not in path.parts:
            with Image.open(path) as im:
                im.load()


def workspace(workdir: Path, methods=("median_cut", "octree"), **extra) -> Path:
    write_tiny_photos(workdir / "images")
    (workdir / "test.yaml").write_text(yaml.safe_dump(
        {"input_dir": "images", "results_dir": "results", "methods": list(methods), **extra}))
    return workdir / "results"


@pytest.mark.slow
def test_sigkill_mid_job_then_rerun_redoes_that_job_only_and_a_second_run_is_refused(tmp_path):
    workdir = tmp_path / "work"
    results = workspace(workdir)
    from skimage import data
    Image.fromarray(data.astronaut()).resize((6000, 4000), Image.Resampling.BILINEAR).save(
        workdir / "images" / SLOW, quality=70)
    current = results / ".history/current.json"
    started = lambda: in_progress(results) is not None  # noqa: E731

    # Its jobs wait while `hold` exists: the first run is still live for the refusals below
    # however fast or loaded the machine (it once ended before the third check under load).
    hold = tmp_path / "hold"
    first = subprocess.Popen(cq_nightly_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=held_env(hold), start_new_session=True)
    try:
        wait_for(started, what="the first run to start")
        owner = current.read_text()
        # A second run on the same results from another working directory: refused, one line.
        other = tmp_path / "elsewhere"
        other.mkdir()
        (other / "abs.yaml").write_text(yaml.safe_dump(
            {"input_dir": str(workdir / "images"), "results_dir": str(results), "methods": ["octree"]}))
        second = cq_nightly(other, other / "abs.yaml", check=False)
        assert second.returncode == 75, second.stderr
        assert f"{results} is in use by pid {first.pid}" in second.stderr and second.stderr.count("\n") == 1
        assert current.read_text() == owner and load_history(results) == []  # no run recorded yet
        # Snakemake's --unlock (or any run ending) in the same working directory cannot free it.
        nightly(workdir, "--unlock")
        assert cq_nightly(other, other / "abs.yaml", check=False).returncode == 75
        hold.unlink()
        # Power cut: the whole process group, the running jobs included, killed mid-job.
        slow_log = results / "logs/median_cut" / f"{SLOW}.log"
        wait_for(slow_log.exists, what="the slow job to start")
        assert first.poll() is None, "the first run ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    assert not (results / "median_cut" / f"{SLOW}.json").exists()
    results_are_whole(results)  # nothing half-written is there to be read as a result
    done_before = {p: p.stat().st_mtime_ns for m in ("median_cut", "octree") for p in (results / m).rglob("*.json")}

    # The next night: no unlock, no stale lock; only the unfinished jobs run.
    expected = {(m, result_key(i)) for m in ("median_cut", "octree")
                for i in ["chelsea.jpg", "rocket.jpg", "rocket.png", 'Ünï côdé/astro "naut" <script>.png', SLOW]
                if not (results / m / f"{result_key(i)}.json").exists()}
    assert ("median_cut", SLOW) in expected
    rerun = cq_nightly(workdir)
    # The job running beside the slow one (2 cores) may have written its record just before
    # the kill, while Snakemake had not yet marked it done: Snakemake then runs it again as
    # incomplete. That one job at most; every other record stays as it was.
    extra = jobs_of(rerun) - expected
    assert expected <= jobs_of(rerun) and len(extra) <= 1, extra
    redone = {results / m / f"{i}.json" for m, i in extra}
    assert {p: p.stat().st_mtime_ns for p in done_before if p not in redone} == {
        p: t for p, t in done_before.items() if p not in redone}  # nothing else redone
    results_are_whole(results)
    assert not [p for p in results.rglob(".*.tmp")]
    runs = load_history(results)
    assert [r["status"] for r in runs] == ["interrupted", "ok"]
    assert runs[1]["counts"]["new"] == 5 and runs[1]["counts"]["missing"] == 0
    assert read_record(results / "median_cut" / f"{SLOW}.json")["status"] == "ok"
    assert (results / "best" / f"{SLOW}.png").exists()


# Kills the job process (SIGKILL, as the OOM killer does) when it starts on an image whose path
# contains $CQ_TEST_DIE: loaded by every Python process of the run through PYTHONPATH.
DIE = """
import os, signal
if os.environ.get("CQ_TEST_DIE"):
    import cq.pipeline as _p
    _real = _p.quantize_file
    def _dying(image_path, *args, **kwargs):
        if os.environ["CQ_TEST_DIE"] in str(image_path):
            os.kill(os.getpid(), signal.SIGKILL)
        return _real(image_path, *args, **kwargs)
    _p.quantize_file = _dying
"""


@pytest.mark.slow
def test_a_killed_job_still_gets_a_report_that_lists_it_and_the_next_night_redoes_it(tmp_path):
    results = workspace(tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DIE)
    dying = env(CQ_TEST_DIE="rocket.png", PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    first = cq_nightly(tmp_path, check=False, env=dying)
    assert first.returncode == 1
    assert re.search(r"cq:   missing: \d × the job died without writing its record.* \((median_cut|2 methods)\): rocket\.png",
                     first.stderr), first.stderr[-3000:]
    rows = (results / "report.csv").read_text()
    missing_rows = [r for r in rows.splitlines() if "missing: the job died" in r]
    assert len(missing_rows) == 2 and all(r.startswith("rocket.png,") for r in missing_rows)
    assert "chelsea.jpg" in rows and (results / "report.html").exists()
    (run,) = load_history(results)
    assert run["status"] == "incomplete" and run["counts"]["missing"] == 2
    second = cq_nightly(tmp_path)
    assert jobs_of(second) == {("median_cut", "rocket.png"), ("octree", "rocket.png")}
    assert "missing" not in (results / "report.csv").read_text()
    assert load_history(results)[-1]["status"] == "ok"


@pytest.mark.slow
def test_other_content_with_old_mtimes_and_a_new_k_without_metadata_are_redone(tmp_path):
    import shutil

    results = workspace(tmp_path, methods=["octree"])
    cq_nightly(tmp_path)
    images = tmp_path / "images"
    st = os.stat(images / "rocket.jpg")
    Image.fromarray(tiny_photo("coffee", (10, 10))).save(images / "new.jpg")
    os.replace(images / "new.jpg", images / "rocket.jpg")
    os.utime(images / "rocket.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))  # touch -r
    older = tmp_path / "older.jpg"
    Image.fromarray(tiny_photo("coffee", (50, 50))).save(older)
    os.utime(older, (1_000_000, 1_000_000))
    shutil.copy2(older, images / "chelsea.jpg")  # cp -p of an older version
    done = cq_nightly(tmp_path)
    assert jobs_of(done) == {("octree", "rocket.jpg"), ("octree", "chelsea.jpg")}
    for name in ("rocket.jpg", "chelsea.jpg"):
        assert read_record(results / "octree" / f"{name}.json")["image"]["sha256"] == \
            file_sha256(images / name)
    shutil.rmtree(tmp_path / ".snakemake")  # a fresh clone, a redeploy
    (tmp_path / "k5.yaml").write_text("k: 5\n")
    done = cq_nightly(tmp_path, tmp_path / "test.yaml", tmp_path / "k5.yaml")
    assert len(jobs_of(done)) == 4
    assert all(read_record(p)["k"] == 5 for p in (results / "octree").rglob("*.json"))


@pytest.mark.slow
def test_output_folders_inside_the_input_folder_are_refused(tmp_path):
    workspace(tmp_path)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"results_dir": "images/results"}))
    done = cq_nightly(tmp_path, tmp_path / "test.yaml", tmp_path / "bad.yaml", check=False)
    assert done.returncode == 2 and "overlaps input_dir" in done.stderr
    assert not (tmp_path / "images/results").exists()


@pytest.mark.slow
def test_a_full_disk_night_is_retried_and_its_history_line_kept(tmp_path):
    # Logs and benchmarks off the full disk, so that the job's log can say why it failed.
    results = workspace(tmp_path, methods=["octree"], logs_dir="logs", benchmarks_dir="benchmarks")
    results.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(results)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        cq_nightly(tmp_path)
        noisy(tmp_path / "images/noise.png")  # its 37-colour PNG (about 60 KB) cannot fit
        filler = results / "filler"
        fill_disk(filler, 4096)
        full = cq_nightly(tmp_path, check=False)
        assert full.returncode == 1, full.stderr
        assert "No space left on device" in (tmp_path / "logs/octree/noise.png.log").read_text()  # the job's log says why
        assert len(load_history(results)) == 1  # the line could not be appended...
        kept = in_progress(results)
        assert kept["end"] and "No space left" in kept["note"]  # ...but it is kept
        filler.unlink()
        again = cq_nightly(tmp_path)
        assert jobs_of(again) == {("octree", "noise.png")}  # transient: retried
        record = read_record(results / "octree/noise.png.json")
        assert record["status"] == "ok" and record["image"]["sha256"] == file_sha256(tmp_path / "images/noise.png")
        runs = load_history(results)
        assert len(runs) == 3 and "next run" in runs[1]["note"] and runs[2]["status"] == "ok"
        assert not list(results.rglob(".*.tmp")) and (results / "report.html").exists()
    finally:
        subprocess.run(["umount", str(results)], check=True)


# --- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (root with CAP_SYS_ADMIN); else None and the tests inject ENOSPC."""
    with tmpfs(tmp_path / "disk", "size=96k") as mounted:
        yield tmp_path / "disk" if mounted else None


def _inject_enospc(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(cq.fsutil.os, "fsync", fsync)


def noisy(path: Path, size=(300, 300)) -> Path:
    """An image whose 37-colour PNG (about 60 KB) does not fit in what the tiny disk has left."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_disk_full_while_writing_the_png_gives_an_error_record_and_no_partial_file(tiny_disk, tmp_path, monkeypatch):
    source = noisy(tmp_path / "noise.png")
    out = tiny_disk or tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "filler").write_bytes(b"\0" * (60 * 1024 if tiny_disk else 0))
    if tiny_disk is None:  # inject for the PNG only; the record is then written normally
        real_save = Image.Image.save

        def save(self, fp, *args, **kwargs):
            real_save(self, fp, *args, **kwargs)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(Image.Image, "save", save)
    record = quantize_file(source, out / "noise.png.png", out / "noise.png.json", Job(method="octree"))
    assert record["status"] == "error" and "No space left on device" in record["error"]
    assert read_record(out / "noise.png.json") == record
    assert sorted(p.name for p in out.iterdir()) == ["filler", "noise.png.json"]


def test_disk_full_for_the_record_raises_and_leaves_no_file(tiny_disk, tmp_path, monkeypatch):
    source = noisy(tmp_path / "noise.png", size=(8, 8))
    out = tiny_disk or tmp_path / "out"
    out.mkdir(exist_ok=True)
    if tiny_disk is None:
        _inject_enospc(monkeypatch)
        (out / "filler").write_bytes(b"")
    else:  # fill the disk up to the last byte
        fill_disk(out / "filler", 1024)
    with pytest.raises(OSError) as raised:
        quantize_file(source, out / "n.png", out / "n.json", Job(method="octree"))
    assert raised.value.errno == errno.ENOSPC
    # In the workflow the job fails, keep-going carries on, and the missing record reruns it.
    assert sorted(p.name for p in out.iterdir()) == ["filler"]


# --- a reader during a report write -----------------------------------------------------------

def test_a_reader_never_sees_half_a_report(tmp_path):
    import threading

    from cq.report import build_report

    images, results = tmp_path / "images", tmp_path / "results"
    names = write_tiny_photos(images)
    records = [quantize_file(images / n, results / "octree" / f"{n}.png", results / "octree" / f"{n}.json",
                             Job(method="octree")) for n in names]
    html, csv_path = results / "report.html", results / "report.csv"
    seen, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            for path in (html, csv_path):
                try:
                    seen.append((path.suffix, path.read_bytes()))
                except FileNotFoundError:
                    pass

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(12):
            build_report(records, results, images, csv_path, html, title=f"run {i}")
    finally:
        stop.set()
        thread.join()
    assert len(seen) > 12
    for suffix, data in seen:
        if suffix == ".html":
            assert data.endswith(b"</html>\n")
        else:
            assert data.count(b"\n") == len(names) + 1 and data.endswith(b"\n")
    assert not list(results.glob(".*.tmp"))


@pytest.mark.slow
def test_shard_mode_redoes_other_content_of_the_same_size_and_mtime(tmp_path):
    results = workspace(tmp_path, methods=["octree"], shard_size=2)
    bmp = tmp_path / "images/scan.bmp"  # uncompressed: other pixels, same size
    Image.fromarray(tiny_photo("chelsea", (100, 120))).save(bmp)
    cq_nightly(tmp_path)
    st = os.stat(bmp)
    Image.fromarray(tiny_photo("coffee", (100, 120))).save(tmp_path / "other.bmp")
    os.replace(tmp_path / "other.bmp", bmp)
    os.utime(bmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(bmp).st_size == st.st_size
    done = cq_nightly(tmp_path)
    assert "rule quantize_shard" in done.stderr
    assert read_record(results / "octree/scan.bmp.json")["image"]["sha256"] == file_sha256(bmp)
    assert load_history(results)[-1]["counts"]["changed"] == 1


@pytest.mark.slow
def test_a_night_whose_results_all_failed_exits_1_with_a_summary(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.jpg", "b.png"):
        (tmp_path / "images" / name).write_bytes(b"\xff\xd8 not an image")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(
        {"input_dir": "images", "results_dir": "results", "methods": ["octree"]}))
    done = cq_nightly(tmp_path, check=False)
    assert done.returncode == 1
    assert "cq: 0 results ok, 2 failed, 0 missing" in done.stderr
    assert "cq:   failed: 2 × not an image Pillow can read (octree): a.jpg, b.png" in done.stderr
    assert f"cq: report: results/report.html" in done.stderr
    assert load_history(tmp_path / "results")[-1]["status"] == "failed"


@pytest.mark.slow
def test_deleting_or_replacing_the_lock_file_lets_no_second_run_in(tmp_path):
    """Issue 18, break 3: `rm results/.history/lock` during a run let a second `cq nightly`
    run beside the first and write the live first run into the history as interrupted."""
    workdir, hold = tmp_path / "work", tmp_path / "hold"
    results = workspace(workdir, methods=["octree"])
    first = subprocess.Popen(cq_nightly_command(workdir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=held_env(hold), start_new_session=True)
    try:
        wait_for(lambda: (results / "logs/octree").is_dir(), what="the first run's jobs to start")
        other = tmp_path / "elsewhere"
        other.mkdir()
        (other / "abs.yaml").write_text(yaml.safe_dump(
            {"input_dir": str(workdir / "images"), "results_dir": str(results), "methods": ["octree"]}))
        (results / ".history/lock").unlink()
        second = cq_nightly(other, other / "abs.yaml", check=False)
        assert second.returncode == 75 and second.stderr.count("\n") == 1, second.stderr
        (results / ".history/lock").write_text('{"pid": 1}')  # replaced by another file
        assert cq_nightly(other, other / "abs.yaml", check=False).returncode == 75
        assert load_history(results) == [] and in_progress(results)["status"] == "running"
        hold.unlink()
        assert first.wait(timeout=240) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    (run,) = load_history(results)
    assert run["status"] == "ok" and run["counts"]["new"] == 4 and run["counts"]["missing"] == 0


# --- issue 18: start-up failures in one line, runs told apart by id, a vanished input ---------

@pytest.mark.slow
@pytest.mark.parametrize("case", ["dangling symlink", "lock is a folder", "read-only mount"])
def test_a_results_folder_that_cannot_be_used_is_one_line_exit_2(tmp_path, case):
    workspace(tmp_path, methods=["octree"])
    results = tmp_path / "results"
    if case == "dangling symlink":
        os.symlink(tmp_path / "unmounted", results)
    elif case == "lock is a folder":
        (results / ".history/lock").mkdir(parents=True)
    else:
        results.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(results)],
                                               capture_output=True).returncode != 0:
            pytest.skip("needs root to mount a read-only file system")
    try:
        done = cq_nightly(tmp_path, check=False)
    finally:
        if case == "read-only mount":
            subprocess.run(["umount", str(results)], check=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("cq: error: ") and "results" in done.stderr
    assert not (tmp_path / "unmounted").exists()


@pytest.mark.slow
def test_a_night_just_after_a_full_disk_night_is_its_own(tmp_path, monkeypatch):
    """Break 4: a night whose line waited in current.json (the disk was full) ended, in the
    clock's eyes, when the next night began (a clock stepped back makes it certain); the next
    night took that line for its own, said "the run ended on a full disk", exit 1, and wrote
    no history, report or best/. Runs are told apart by id now."""
    from cq import history

    results = workspace(tmp_path, methods=["octree"])
    cq_nightly(tmp_path)
    images = sorted(str(p.relative_to(tmp_path / "images")) for p in (tmp_path / "images").rglob("*.*"))
    monkeypatch.chdir(tmp_path)
    history.begin("results", "images", images, ["octree"], run_id="the full-disk night")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    later = history._now() + __import__("datetime").timedelta(minutes=5)
    with monkeypatch.context() as m:
        m.setattr(history, "append_history", full)
        m.setattr(history, "_now", lambda: later)
        history.finish("results", images, ["octree"])
    assert history.ended("results", "the full-disk night")
    (results / "report.html").unlink()
    done = cq_nightly(tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    runs = load_history(results)
    assert [r.get("id") for r in runs[1:]][:1] == ["the full-disk night"] and "next run" in runs[1]["note"]
    assert len(runs) == 3 and runs[2]["status"] == "ok" and runs[2]["id"] not in ("the full-disk night", runs[0]["id"])
    assert (results / "report.html").exists() and in_progress(results) is None


@pytest.mark.slow
def test_an_emptied_or_unmounted_input_is_not_a_night(tmp_path):
    """Item 2: a folder that had images now holds none, or fewer than half: the night refuses
    in one line (exit 2), keeping the report, best/ and the history; --accept-fewer runs it."""
    results = workspace(tmp_path, methods=["octree"])
    cq_nightly(tmp_path)
    kept = {p: p.read_bytes() for p in [results / "report.html", results / "report.csv", *(results / "best").rglob("*")]
            if p.is_file()}
    images = tmp_path / "images"
    aside = tmp_path / "aside"
    images.rename(aside)
    images.mkdir()  # an empty mount point: the share is not mounted
    for names in ([], ["chelsea.jpg"]):  # none, then 1 of 4
        for name in names:
            (aside / name).rename(images / name)
        done = cq_nightly(tmp_path, check=False)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"holds {len(names)} images, the last night found 4" in done.stderr and "--accept-fewer" in done.stderr
        assert {p: p.read_bytes() for p in kept} == kept and len(load_history(results)) == 1
    (aside / "rocket.jpg").rename(images / "rocket.jpg")  # 2 of 4: half is not fewer than half
    cq_nightly(tmp_path)
    assert load_history(results)[-1]["images"] == 2
    for name in ("rocket.jpg", "chelsea.jpg"):
        (images / name).unlink()
    accepted = subprocess.run(cq_nightly_command(tmp_path) + ["--accept-fewer"], capture_output=True, text=True,
                              env=env(), timeout=300)
    assert accepted.returncode == 0, accepted.stderr
    assert load_history(results)[-1]["images"] == 0


@pytest.mark.slow
def test_a_dropped_method_is_listed_and_the_summary_counts_what_was_computed(tmp_path):
    """Item 3: a method removed from the config is named in the report with its kept results;
    with 1 image changed and 1 touched, the summary says 1 computed (it said 2)."""
    results = workspace(tmp_path, methods=["median_cut", "octree"])
    cq_nightly(tmp_path)
    (tmp_path / "less.yaml").write_text("methods: [octree]\n")
    images = tmp_path / "images"
    Image.fromarray(tiny_photo("coffee", (10, 10))).save(images / "rocket.png")
    os.utime(images / "chelsea.jpg", None)
    done = cq_nightly(tmp_path, tmp_path / "test.yaml", tmp_path / "less.yaml")
    assert "(this run: 1 ok, 0 failed)" in done.stderr, done.stderr
    page = (results / "report.html").read_text()
    assert "median_cut: dropped from the config; its 4 results are kept in results/median_cut/" in page
    assert (results / "median_cut/rocket.png.json").exists()


@pytest.mark.slow
def test_no_png_outlives_its_record_when_a_job_dies(tmp_path):
    """Found by the night machine: the start check deletes a stale record so that its job
    runs; when that job then died, the old PNG stayed without a record. The end of the run
    removes the PNG of every missing result."""
    results = workspace(tmp_path, methods=["octree"])
    cq_nightly(tmp_path)
    Image.fromarray(tiny_photo("coffee", (10, 10))).save(tmp_path / "images/rocket.png")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DIE)
    dying = env(CQ_TEST_DIE="rocket.png", PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    assert cq_nightly(tmp_path, check=False, env=dying).returncode == 1
    assert not (results / "octree/rocket.png.json").exists() and not (results / "octree/rocket.png.png").exists()
    assert (results / "octree/rocket.jpg.png").exists()


@pytest.mark.slow
def test_a_night_from_another_working_directory_names_the_images_alike(tmp_path):
    """Found by the night machine: records name their image relative to the working directory
    of the run that made them, so a night started elsewhere (cron from /, absolute paths)
    listed every image twice over, once under a name that is not in the folder."""
    results = workspace(tmp_path, methods=["octree"])
    cq_nightly(tmp_path)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "abs.yaml").write_text(yaml.safe_dump(
        {"input_dir": str(tmp_path / "images"), "results_dir": str(results), "methods": ["octree"]}))
    cq_nightly(other, other / "abs.yaml")
    import csv
    with open(results / "report.csv", newline="", encoding="utf-8") as f:
        assert sorted(row["image"] for row in csv.DictReader(f)) == sorted(
            str(p.relative_to(tmp_path / "images")) for p in (tmp_path / "images").rglob("*.*"))
