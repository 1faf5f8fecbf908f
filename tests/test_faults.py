"""Faults a night must survive: the run killed mid-job (SIGKILL) and rerun, a second run started
during one, a full disk, a GPU out of memory, a job past its time limit.

- GPU out of memory in cnn: tests/test_cnn.py::test_cuda_out_of_memory_falls_back_to_cpu.
- Time limit: tests/test_methods.py::test_time_limit_becomes_an_error_record covers
  ``Job.time_limit_s`` (an overrun becomes an error record); the workflow passes each job's
  ``runtime`` resource as that limit, tested in tests/test_workflow.py.
"""

import errno
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cq.fsutil
from conftest import NIGHTLY, command, env, jobs_of, snakemake, write_tiny_photos
from cq.history import load_history
from cq.pipeline import Job, quantize_file
from cq.record import read_record

SLOW = "slow.jpg"  # 24 megapixels: median_cut takes seconds on it, long enough to be killed in


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


@pytest.mark.slow
def test_sigkill_mid_job_then_rerun_redoes_that_job_only_and_a_second_run_is_refused(tmp_path):
    workdir = tmp_path
    images = workdir / "images"
    write_tiny_photos(images)
    from skimage import data
    Image.fromarray(data.astronaut()).resize((6000, 4000), Image.Resampling.BILINEAR).save(images / SLOW, quality=70)
    (workdir / "test.yaml").write_text(yaml.safe_dump(
        {"input_dir": "images", "results_dir": "results", "methods": ["median_cut", "octree"]}))
    results = workdir / "results"
    current = results / ".history/current.json"

    first = subprocess.Popen(command(workdir, profile=NIGHTLY), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=env(), start_new_session=True)
    try:
        wait_for(current.exists, what="the first run to start")
        owner = current.read_text()
        # A second run while the first holds the lock: refused with Snakemake's message.
        second = snakemake(workdir, profile=NIGHTLY, check=False)
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
        assert current.read_text() == owner and load_history(results) == []  # no run recorded yet
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

    # The next night: Snakemake's lock is stale; cq.history proves its owner dead, then unlock.
    stale = subprocess.run([str(Path(command(workdir, profile=NIGHTLY)[0]).with_name("python")), "-m", "cq.history",
                            "stale", str(results)], capture_output=True, text=True)
    assert stale.returncode == 0, stale.stderr
    assert "cannot be locked" in snakemake(workdir, profile=NIGHTLY, check=False).stderr
    snakemake(workdir, "--unlock", profile=NIGHTLY)
    planned = jobs_of(snakemake(workdir, "--dry-run", profile=NIGHTLY))
    expected = {(m, i) for m in ("median_cut", "octree")
                for i in ["chelsea.jpg", "rocket.jpg", "rocket.png", 'Ünï côdé/astro "naut" <script>.png', SLOW]
                if not (results / m / f"{i}.json").exists()}
    assert ("median_cut", SLOW) in expected and planned == expected
    rerun = snakemake(workdir, profile=NIGHTLY)
    assert jobs_of(rerun) == expected
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # nothing else redone
    results_are_whole(results)
    assert not [p for p in results.rglob(".*.tmp")]
    runs = load_history(results)
    assert [r["status"] for r in runs] == ["interrupted", "ok"]
    assert runs[1]["counts"]["new"] == 5 and runs[1]["counts"]["missing"] == 0
    assert read_record(results / "median_cut" / f"{SLOW}.json")["status"] == "ok"


# --- a full disk ----------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (root with CAP_SYS_ADMIN); else None and the tests inject ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                                            capture_output=True).returncode == 0:
        yield mount
        subprocess.run(["umount", str(mount)], check=True)
    else:
        yield None


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
        fd = os.open(out / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 1024)
        except OSError as e:
            assert e.errno == errno.ENOSPC
        finally:
            os.close(fd)
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
