"""Throughput of the workflow through SLURM: SLURM jobs submitted and wall time for N images.

    python bench/slurm.py                       # 100 images, kmeans median_cut octree
    python bench/slurm.py --images 20 --methods octree
    python bench/slurm.py --images 100 -- --slurm-array-jobs quantize   # extra snakemake args
    python bench/slurm.py --images 100 --shard-size 25   # shard mode: one job per (shard, method)

Runs `snakemake --profile profiles/slurm --profile profiles/slurm-test` (the one-node test
cluster of tests/slurm/up.sh; started here if it is not running, then stopped by pid) in a
scratch folder on N distinct 64x48 crops of scikit-image photographs, and prints the number of
sbatch submissions, SLURM job ids (array tasks count once per task), the jobs Snakemake ran,
and the wall time. Needs root for up.sh, like the test cluster.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
UP_SH = REPO / "tests/slurm/up.sh"
PIDFILES = {"slurmd": "/run/slurmd.pid", "slurmctld": "/run/slurmctld.pid",
            "munged": "/run/munge/munged.pid"}
# One line per sbatch: a plain job, or an array (its tasks are Snakemake jobs).
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")
ARRAY = re.compile(r"Submitted array job with Snakemake IDs (\S+) and SLURM job ID (\d+)")
PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field"]


def alive(name: str) -> int | None:
    try:
        pid = int(Path(PIDFILES[name]).read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def start_cluster() -> dict[str, int]:
    """Run up.sh unless every daemon runs; return the pids of the daemons started here."""
    before = {name: alive(name) for name in PIDFILES}
    if all(before.values()):
        return {}
    subprocess.run(["bash", str(UP_SH)], check=True, capture_output=True, timeout=900)
    return {n: pid for n in PIDFILES if not before[n] and (pid := alive(n))}


def stop(pids: dict[str, int]) -> None:
    for pid in pids.values():
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.2)


def write_images(folder: Path, n: int) -> None:
    """n distinct 64x48 crops, walking a grid over several photographs."""
    from skimage import data

    folder.mkdir(parents=True)
    photos = [np.asarray(getattr(data, p)())[..., :3] for p in PHOTOS]
    photos = [p if p.ndim == 3 else np.repeat(p[..., None], 3, axis=2) for p in photos]
    crops = [(p, y, x) for p in photos for y in range(0, p.shape[0] - 48, 48)
             for x in range(0, p.shape[1] - 64, 64)]
    for i in range(n):
        photo, y, x = crops[(i * 7919) % len(crops)]
        Image.fromarray(np.ascontiguousarray(photo[y:y + 48, x:x + 64])).save(folder / f"img{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["kmeans", "median_cut", "octree"])
    parser.add_argument("--shard-size", type=int, default=0,
                        help="config shard_size (default 0: one job per image and method)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("extra", nargs="*", help="more snakemake arguments (after --)")
    args = parser.parse_args()

    started = start_cluster()
    work = Path(tempfile.mkdtemp(prefix="cq-slurm-bench-"))
    try:
        write_images(work / "images", args.images)
        config = yaml.safe_load((REPO / "config/config.yaml").read_text())
        config.update(input_dir="images", results_dir="results", logs_dir="logs",
                      benchmarks_dir="benchmarks", methods=args.methods, variants={},
                      shard_size=args.shard_size)
        (work / "config").mkdir()
        (work / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
               "--profile", str(REPO / "profiles/slurm"), "--profile", str(REPO / "profiles/slurm-test"),
               "--slurm-keep-successful-logs", *args.extra]
        t0 = time.monotonic()
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        wall = time.monotonic() - t0
        out = done.stdout + done.stderr
        (work / "snakemake.out").write_text(out)
        if done.returncode != 0:
            sys.exit(f"snakemake failed ({done.returncode}); see {work}/snakemake.out\n{out[-3000:]}")
        plain = SUBMITTED.findall(out)
        arrays = ARRAY.findall(out)
        tasks = sum(len(ids.split(",")) for ids, _ in arrays)
        steps = re.findall(r"(\d+) of (\d+) steps \(100%\) done", out)
        records = sum(len(list((work / "results" / m).rglob("*.json"))) for m in args.methods)
        print(f"images {args.images}, methods {' '.join(args.methods)}, shard_size {args.shard_size}, "
              f"extra args {args.extra or 'none'}")
        print(f"  sbatch submissions      {len(plain) + len(arrays)} "
              f"({len(plain)} jobs, {len(arrays)} arrays of {tasks} tasks)")
        print(f"  SLURM jobs run          {len(plain) + tasks}")
        print(f"  snakemake jobs (steps)  {steps[-1][1] if steps else '?'} (incl. the local target rule all)")
        print(f"  result records          {records}")
        print(f"  wall time               {wall:.1f} s ({wall / max(records, 1):.2f} s per record)")
    finally:
        stop(started)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            print(f"  scratch folder          {work}")


if __name__ == "__main__":
    main()
