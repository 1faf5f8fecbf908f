"""The workflow through a real (one-node) SLURM cluster: every job goes through sbatch.

The cluster is started by tests/slurm/up.sh when it is not running (as root: it apt-installs
SLURM and starts its daemons, see tests/slurm/README.md), and what this module started is
stopped again, by pid. Where it cannot start (not root, no apt, no network), the tests skip
with a one-line reason; CQ_REQUIRE_ALL=1 (set by CI) makes that a failure.

The run uses the user's profile profiles/slurm plus profiles/slurm-test (what the test cluster
needs), from a folder whose config/config.yaml is the repository's with tiny inputs. cnn jobs ask
for the node's one GPU (a GRES with no device behind it): the test shows placement, not speed.
"""

from __future__ import annotations

import csv
import json
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

from conftest import REPO, require_or_skip, snakemake

pytestmark = pytest.mark.slurm

UP_SH = REPO / "tests/slurm/up.sh"
# Stopped in this order (the node daemon first, munge last).
PIDFILES = {
    "slurmd": Path("/run/slurmd.pid"),
    "slurmctld": Path("/run/slurmctld.pid"),
    "munged": Path("/run/munge/munged.pid"),
}
PHOTOS = {"astronaut": (100, 100), "coffee": (150, 200)}
FAST = ["median_cut", "octree"]
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def _pid(name: str) -> int | None:
    """The pid in the daemon's pid file when that process is alive, else None."""
    try:
        pid = int(PIDFILES[name].read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _node_state() -> str:
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() if done.returncode == 0 else f"sinfo failed: {done.stderr.strip()}"


def _stop(pid: int, timeout: float = 20) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the test cluster unless its daemons run; stop (by pid) only what this started."""
    before = {name: _pid(name) for name in PIDFILES}
    if not all(before.values()):
        if os.geteuid() != 0:
            require_or_skip("no SLURM cluster running, and tests/slurm/up.sh needs root to start one")
        try:
            done = subprocess.run(["bash", str(UP_SH)], capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired as e:
            require_or_skip(f"no SLURM cluster: tests/slurm/up.sh did not finish in {e.timeout} s")
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            require_or_skip(f"no SLURM cluster: tests/slurm/up.sh failed ({done.returncode}): {last}")
    started = {name: pid for name in PIDFILES if not before[name] and (pid := _pid(name))}
    missing = [name for name in PIDFILES if not _pid(name)]
    state = _node_state()
    if missing or state not in {"idle", "mix", "alloc"}:
        for pid in started.values():
            _stop(pid)
        pytest.fail(f"SLURM cluster not up: daemons not running {missing}, node state {state!r}")
    yield
    for pid in started.values():
        _stop(pid)


def _methods() -> dict:
    from cq.methods import all_methods

    return all_methods()


def _test_config(workdir: Path) -> list[str]:
    """Write workdir/test.yaml, over the repository's config: tiny inputs, fast methods plus a
    short cnn. Its GPU flag is left to the profile's config (profiles/slurm/gpu.yaml)."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config = {"input_dir": "images", "results_dir": "results", "variants": {}, "methods": [*FAST, "cnn"],
              "cnn": config.get("cnn")}
    registry = _methods()
    assert "cnn" in registry, "cnn is not registered"
    cnn = dict(config.get("cnn") or {})
    cnn.pop("gpu", None)
    cnn.update(threads=1, mem_mb=3000, runtime=10)
    # A short training: placement is under test here, not quality.
    cnn.update({key: value for key, value in {"epochs": 2, "steps_per_epoch": 2}.items()
                if key in registry["cnn"].defaults})
    config["cnn"] = cnn
    (workdir / "test.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config["methods"]


def _scontrol(jobid: str) -> dict[str, str]:
    """KEY=VALUE fields of `scontrol show job -d` (the -d part adds JOB_GRES)."""
    out = subprocess.run(["scontrol", "show", "job", "-d", jobid], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    images = workdir / "images"
    images.mkdir()
    from skimage import data

    for name, (y, x) in PHOTOS.items():
        crop = getattr(data, name)()[y: y + 32, x: x + 48, :3]
        Image.fromarray(np.ascontiguousarray(crop)).save(images / f"{name}.png")
    methods = _test_config(workdir)
    # The user's profile and its config (the cnn GPU flag), then what the test cluster needs;
    # the real scontrol, not the runner's stand-in.
    profiles = REPO / "profiles"
    started = time.monotonic()
    done = snakemake(workdir, "--profile", str(profiles / "slurm"), "--profile", str(profiles / "slurm-test"),
                     "--verbose", "--configfile", str(REPO / "config/config.yaml"), str(workdir / "test.yaml"),
                     str(profiles / "slurm/gpu.yaml"), check=False, timeout=900, env=dict(os.environ))
    elapsed = time.monotonic() - started
    (workdir / "snakemake.out").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        pytest.fail(f"snakemake --executor slurm failed ({done.returncode}) after {elapsed:.0f} s; "
                    f"tail:\n{(done.stdout + done.stderr)[-6000:]}")
    print(f"\nworkflow through SLURM: {elapsed:.1f} s")
    # (snakemake job id, SLURM job id, SLURM log) per submission.
    submitted = SUBMITTED.findall(done.stdout + done.stderr)
    return {"workdir": workdir, "methods": methods,
            "output": done.stdout + done.stderr, "submitted": submitted}


def _expected_jobs(run) -> set[str]:
    """The SLURM log folders the plugin uses: rule_<rule>/<wildcards>."""
    jobs = {f"rule_quantize/{m}_{image}.png" for m in run["methods"] for image in PHOTOS}
    return jobs | {"rule_report"}


def _job_of(log: str, workdir: Path) -> str:
    rel = Path(log).parent.relative_to(workdir / "logs/slurm")
    return str(rel)


def test_every_job_went_through_sbatch_and_completed(slurm_run):
    workdir, submitted = slurm_run["workdir"], slurm_run["submitted"]
    jobs = [_job_of(log, workdir) for _, _, log in submitted]
    assert sorted(jobs) == sorted(_expected_jobs(slurm_run)), "one sbatch per job, none twice"
    # Nothing ran on the submit host but the target rule `all`.
    local = re.findall(r"^localrule (\w+):", slurm_run["output"], flags=re.M)
    assert set(local) <= {"all"}, local
    for _, slurm_id, log in submitted:
        fields = _scontrol(slurm_id)
        assert fields["JobState"] == "COMPLETED", (slurm_id, fields["JobState"])
        assert fields["Partition"] == "debug"
        # The job's SLURM log (kept by profiles/slurm-test) shows it ran under that SLURM job id.
        assert f"'SLURM_JOB_ID': '{slurm_id}'" in Path(log).read_text()


def test_outputs_and_report(slurm_run):
    workdir, methods = slurm_run["workdir"], slurm_run["methods"]
    for method in methods:
        for image in PHOTOS:
            record = json.loads((workdir / f"results/{method}/{image}.png.json").read_text())
            assert record["status"] == "ok", record.get("error")
            png = workdir / f"results/{method}/{image}.png.png"
            with Image.open(png) as im:
                colours = {c for _, c in im.convert("RGB").getcolors(maxcolors=4096)}
            assert len(colours) == 37
    assert (workdir / "results/report.html").stat().st_size > 0
    with open(workdir / "results/report.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["image"], r["method"]) for r in rows) == sorted(
        (f"{image}.png", m) for image in PHOTOS for m in methods)


def test_cnn_jobs_asked_for_and_got_the_gpu(slurm_run):
    workdir = slurm_run["workdir"]
    gpu_jobs, cpu_jobs = [], []
    for _, slurm_id, log in slurm_run["submitted"]:
        job = _job_of(log, workdir)
        is_gpu = job.startswith("rule_quantize/cnn_")
        fields = _scontrol(slurm_id)
        env = Path(log).read_text()  # snakemake --verbose prints the job's environment
        if is_gpu:
            # Asked for (sbatch --gpus=1), allocated by slurmctld, and visible to the job.
            assert fields.get("TresPerJob") == "gres:gpu:1", fields.get("TresPerJob")
            assert fields.get("JOB_GRES") == "gpu:1", fields.get("JOB_GRES")
            assert "'CUDA_VISIBLE_DEVICES': '0'" in env
            gpu_jobs.append(fields)
        else:
            assert "gpu" not in fields.get("TresPerJob", "") + fields.get("JOB_GRES", "")
            cpu_jobs.append(fields)
    assert len(gpu_jobs) == len(PHOTOS) and cpu_jobs
    # The record says where torch trained: the node's GPU is a GRES with no device behind it,
    # so the CPU, unless this machine really has CUDA.
    import torch

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    for image in PHOTOS:
        record = json.loads((workdir / f"results/cnn/{image}.png.json").read_text())
        assert record["extras"]["device"] == expected, record["extras"]
    # One GPU on the node: its jobs ran one after the other.
    spans = sorted((f["StartTime"], f["EndTime"]) for f in gpu_jobs)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert start >= end, spans
