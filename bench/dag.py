"""What the workflow itself costs: dry-run time and memory by folder size, and per-job overhead.

Run: python bench/dag.py [--sizes 1000,10000,100000] [--modes per-image,shard] [--shard-size 500]
                         [--per-image-max 10000] [--jobs 20] [--keep]

- Dry run: N empty ``*.png`` files (100 a folder) x 6 method columns, timed with
  ``/usr/bin/time -v`` (wall clock, CPU seconds (user + system) and peak RSS of
  ``snakemake --dry-run``), plus the time of discovery alone, in each mode: one job per
  (image, method) (``shard_size: 0``) and shards (``shard_size: --shard-size``). A dry run
  writes nothing (a real run's start writes the shards' listings). Per-image mode is skipped above
  ``--per-image-max`` images (at 10,000 it already takes over a minute and a GB).
  The 6 columns are kmeans, median_cut, octree, libimagequant, direct, cnn; any of them not
  registered yet is replaced by a variant of a registered method. The machine is shared, so
  compare CPU seconds rather than wall clock between runs.
- Overhead: ``--jobs`` tiny photos through octree with ``--cores 2``; the run's wall clock
  against the sum of the jobs' own benchmark times.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
WANTED = ["kmeans", "median_cut", "octree", "libimagequant", "direct", "cnn"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def columns() -> tuple[list[str], dict]:
    """Six column names and the variants that stand in for unregistered methods."""
    from cq.methods import all_methods

    registered = all_methods()
    names, variants = [], {}
    for name in WANTED:
        if name in registered:
            names.append(name)
        else:
            stand_in = f"{name}_standin"
            variants[stand_in] = {"method": "octree"}
            names.append(stand_in)
    return names, variants


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """Run the workflow on ``workdir`` under /usr/bin/time -v."""
    (workdir / "bench.yaml").write_text(yaml.safe_dump(config))
    cmd = ["/usr/bin/time", "-v", SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "2", "--configfile", str(REPO / "config/config.yaml"), str(workdir / "bench.yaml"),
           *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"snakemake failed:\n{done.stderr[-3000:]}")
    return done


def time_v(stderr: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) from /usr/bin/time -v's report."""
    clock = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", stderr)
    hours, minutes, seconds = clock.groups()
    wall = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1)) / 1024
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", stderr).group(1)) for kind in ("User", "System"))
    return wall, cpu, rss


def make_folder(n_images: int, root: Path) -> Path:
    """A workspace with ``n_images`` empty ``.png`` files, 100 a folder (kept between modes)."""
    workdir = root / f"dry{n_images}"
    for i in range(n_images):
        folder = workdir / "images" / f"f{i // 100:04d}"
        if i % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"img {i:06d}.png").touch()
    return workdir


def dry_run(workdir: Path, shard_size: int) -> dict:
    """Dry-run figures for the folder of ``workdir`` x 6 columns, with ``shard_size``."""
    from cq.discover import discover
    from cq.shards import assign_shards

    t0 = time.perf_counter()
    found = discover(workdir / "images", ["png"])
    walk = time.perf_counter() - t0
    names, variants = columns()
    jobs = len(found.images) * len(names)
    if shard_size:
        jobs = len(assign_shards(found.images, shard_size)) * len(names)
    config = {"input_dir": "images", "methods": names, "variants": variants, "shard_size": shard_size}
    done = snakemake(workdir, config, "--dry-run", "--quiet", "all")
    wall, cpu, rss = time_v(done.stderr)
    return {"images": len(found.images), "jobs": jobs, "dry_run_s": wall,
            "cpu_s": cpu, "peak_rss_mib": rss, "discovery_s": walk}


def overhead(n_jobs: int, root: Path) -> dict:
    """Per-job overhead of real (tiny) jobs: run wall clock vs the jobs' own benchmarked time."""
    from conftest import write_tiny_photos

    workdir = root / "overhead"
    images = workdir / "images"
    count = len(write_tiny_photos(images))
    for i in range(count, n_jobs):
        shutil.copy(images / "chelsea.jpg", images / f"copy{i:03d}.jpg")
    config = {"input_dir": "images", "methods": ["octree"]}
    done = snakemake(workdir, config, "--quiet", "all")
    wall, _, _ = time_v(done.stderr)
    tsvs = list((workdir / "results/benchmarks/octree").rglob("*.tsv"))  # benchmarks_dir's default
    own = sum(_bench_seconds(p) for p in tsvs)
    cpu = sum(_bench_seconds(p, "cpu_time") for p in tsvs)
    report = _bench_seconds(workdir / "results/benchmarks/report.tsv")
    return {"jobs": n_jobs, "cores": 2, "wall_s": wall, "sum_job_s": own, "sum_cpu_s": cpu, "report_s": report,
            "overhead_per_job_s": (wall - (own / 2) - report) / n_jobs}


def _bench_seconds(path: Path, column: str = "s") -> float:
    with open(path) as f:
        return float(next(csv.DictReader(f, delimiter="\t"))[column])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="folder sizes to dry-run, comma-separated")
    p.add_argument("--modes", default="per-image,shard", help="per-image and/or shard, comma-separated")
    p.add_argument("--shard-size", type=int, default=500, help="shard_size of the shard mode")
    p.add_argument("--per-image-max", type=int, default=10000, help="skip per-image mode above this size")
    p.add_argument("--jobs", type=int, default=20, help="real tiny jobs for the overhead figure (0: skip)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="cq-bench-dag-"))
    modes = [m for m in args.modes.split(",") if m]
    try:
        names, _ = columns()
        print(f"columns: {', '.join(names)}; shard mode: shard_size {args.shard_size}")
        print(f"{'images':>8} {'mode':>17} {'jobs':>8} {'dry-run s':>10} {'CPU s':>7} {'peak RSS MiB':>13} "
              f"{'discovery s':>12}")
        for n in (int(s) for s in args.sizes.split(",") if s):
            workdir = make_folder(n, root)
            runs = []
            if "per-image" in modes and n <= args.per_image_max:
                runs.append(("per-image", 0))
            if "shard" in modes:
                runs += [("shard (1st)", args.shard_size), ("shard", args.shard_size)]
            for label, size in runs:
                r = dry_run(workdir, size)
                print(f"{r['images']:>8} {label:>17} {r['jobs']:>8} {r['dry_run_s']:>10.1f} {r['cpu_s']:>7.1f} "
                      f"{r['peak_rss_mib']:>13.0f} {r['discovery_s']:>12.3f}", flush=True)
            shutil.rmtree(workdir, ignore_errors=True)
        if args.jobs:
            r = overhead(args.jobs, root)
            print(f"\n{r['jobs']} octree jobs on tiny photos, --cores 2: wall {r['wall_s']:.1f} s, "
                  f"sum of job benchmarks {r['sum_job_s']:.1f} s ({r['sum_job_s'] / r['jobs']:.2f} s wall and "
                  f"{r['sum_cpu_s'] / r['jobs']:.2f} CPU s a job), report {r['report_s']:.1f} s\nscheduling overhead per job: {r['overhead_per_job_s']:.2f} s "
                  f"(wall - sum/2 - report, over {r['jobs']} jobs)")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
