"""Shared test helpers: the repository, tiny real photographs, and the one Snakemake runner.

Test modules import what they need from here (``from conftest import ...``), never from
another test module.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
NIGHTLY = REPO / "profiles/nightly"

# Relative path -> (scikit-image photo, crop origin). Odd names on purpose: a space, quotes,
# markup and non-ASCII letters; rocket.jpg and rocket.png share a stem.
TINY_PHOTOS = {
    "chelsea.jpg": ("chelsea", (100, 120)),
    "rocket.jpg": ("rocket", (200, 220)),
    "rocket.png": ("rocket", (250, 250)),
    'Ünï côdé/astro "naut" <script>.png': ("astronaut", (80, 200)),
}


def tiny_photo(name: str, origin: tuple[int, int], size=(48, 32)) -> np.ndarray:
    """A size[0] x size[1] crop of a scikit-image photograph (>= 37 distinct colours)."""
    from skimage import data

    y, x = origin
    return getattr(data, name)()[y: y + size[1], x: x + size[0], :3]


def write_tiny_photos(folder: Path) -> list[str]:
    """Write TINY_PHOTOS under ``folder``; return their relative paths."""
    for rel, (name, origin) in TINY_PHOTOS.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(tiny_photo(name, origin))).save(path, quality=95)
    return sorted(TINY_PHOTOS)


def touch(root: Path, *names: str) -> None:
    """Create empty files ``names`` (relative paths) under ``root``."""
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# --- require-all: a skip that CI turns into a failure ------------------------------------

def require_or_skip(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when CQ_REQUIRE_ALL=1 (as CI sets): what a
    fresh machine may lack, CI must have."""
    if os.environ.get("CQ_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (CQ_REQUIRE_ALL=1 turns this skip into a failure)")
    pytest.skip(reason)


# --- the Snakemake runner -----------------------------------------------------------------

# The SLURM executor plugin runs `scontrol show config` when Snakemake loads its plugins; with
# SLURM installed and its controller down that waits 10 s on every start. Local runs put a
# stand-in scontrol that fails at once first on their PATH.
_SHIM: Path | None = None


def _scontrol_shim() -> Path:
    global _SHIM
    if _SHIM is None:
        _SHIM = Path(tempfile.mkdtemp(prefix="cq-noslurm-"))
        atexit.register(shutil.rmtree, _SHIM, True)
        (_SHIM / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (_SHIM / "scontrol").chmod(0o755)
    return _SHIM


def env(**extra) -> dict:
    """This process's environment with the scontrol stand-in first on PATH, plus ``extra``.
    Snakemake's full output (CQ_TERMINAL=full, not cq's progress line): the tests read which
    jobs ran from its job listings; tests/test_terminal.py sets its own."""
    return {**os.environ, "PATH": f"{_scontrol_shim()}{os.pathsep}{os.environ['PATH']}", "CQ_TERMINAL": "full",
            **extra}


def command(workdir: Path, *args: str, profile: Path | None = None) -> list[str]:
    """The workflow in ``workdir`` on 2 cores, with the repository's config plus the test's
    ``workdir/test.yaml`` (and a workflow profile, e.g. NIGHTLY)."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2"]
    if profile is not None:
        cmd += ["--workflow-profile", str(profile)]
    return cmd + ["--configfile", str(REPO / "config/config.yaml"), str(workdir / "test.yaml"), *args]


def snakemake(workdir: Path, *args: str, check: bool = True, profile: Path | None = None,
              timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """One run of :func:`command`; fails the test, with the output, when ``check`` and it fails."""
    done = subprocess.run(command(workdir, *args, profile=profile), capture_output=True, text=True,
                          timeout=timeout, env=kwargs.pop("env", None) or env(), **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def jobs_of(done: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(method, result key) of the quantize jobs a run (stderr) or dry run (stdout) names, and
    of the records a dry run names as not current (cq.run.Run.start: a real run redoes them)."""
    out = done.stdout + done.stderr
    stale = re.findall(r"cq: not current, a real run redoes it: [^/\n]+/(\S+?)/(.+)\.json \(", out)
    return set(re.findall(r"wildcards: method=(\S+), key=(.+)", out)) | set(stale)


def shard_jobs_of(done: subprocess.CompletedProcess) -> set[tuple[str, str]]:
    """(method, shard) of the quantize_shard jobs a run or dry run names (as jobs, or as manifests
    not current: cq.run.Run.start)."""
    out = done.stdout + done.stderr
    stale = re.findall(r"cq: not current, a real run redoes it: \S*/shards/(?!_images/)(\S+)/(\d+)\.tsv \(", out)
    return set(re.findall(r"wildcards: method=(\S+), shard=(\d+)", out)) | set(stale)


# --- nightly runs: the workflow under the nightly profile, and `cq nightly` ---------------------

def nightly(workdir: Path, *args: str, profile: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """One run of the workflow in ``workdir`` under the nightly profile (or the default one)."""
    return snakemake(workdir, *args, profile=NIGHTLY if profile else None, **kwargs)


def cq_nightly_command(workdir: Path, *configs: Path) -> list[str]:
    """`cq nightly` on ``workdir`` (its test.yaml, or ``configs``), as cron would run it."""
    configs = configs or (workdir / "test.yaml",)
    return [sys.executable, "-m", "cq.nightly", "--workflow", str(REPO), "-d", str(workdir), "--cores", "2",
            "--configfile", str(REPO / "config/config.yaml"), *map(str, configs)]


def cq_nightly(workdir: Path, *configs: Path, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """One night through `cq nightly`; ``check``: it must exit 0."""
    done = subprocess.run(cq_nightly_command(workdir, *configs), capture_output=True, text=True,
                          timeout=300, env=kwargs.pop("env", env()), **kwargs)
    if check and done.returncode != 0:
        pytest.fail(f"cq nightly failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


# Holds every job (in cq.pipeline.quantize_file) while the file $CQ_TEST_HOLD exists: a run
# kept live for as long as a test needs, with no timing guess. Each held job appends its pid
# to $CQ_TEST_HOLD.pids (see held_jobs).
HOLD = """
import os, time
if os.environ.get("CQ_TEST_HOLD"):
    import cq.pipeline as _p
    _real = _p.quantize_file
    def _held(*args, **kwargs):
        with open(os.environ["CQ_TEST_HOLD"] + ".pids", "a") as f:
            f.write(f"{os.getpid()}\\n")
        end = time.monotonic() + 120
        while os.path.exists(os.environ["CQ_TEST_HOLD"]) and time.monotonic() < end:
            time.sleep(0.05)
        return _real(*args, **kwargs)
    _p.quantize_file = _held
"""


def held_env(hold: Path) -> dict:
    """An environment whose jobs wait while the file ``hold`` exists (created here; see HOLD)."""
    site = hold.with_name(hold.name + "-site")
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(HOLD)
    hold.write_text("")
    return env(CQ_TEST_HOLD=str(hold), PYTHONPATH=f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")


def held_jobs(hold: Path) -> list[int]:
    """The pids of the jobs held by ``hold`` so far (see HOLD)."""
    try:
        return [int(line) for line in Path(f"{hold}.pids").read_text().split()]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def tmpfs(mount: Path, options: str):
    """Mount a tmpfs with ``options`` at ``mount`` (created) for the block: yields True, and
    unmounts after; yields False where it cannot be mounted (not root, no CAP_SYS_ADMIN)."""
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", str(mount)], check=True)
