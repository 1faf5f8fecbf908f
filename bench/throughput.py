"""Folder throughput in shard mode: what Snakemake and cq cost around the methods' own work.

Run: nice -n 10 python bench/throughput.py [--photos 200] [--methods kmeans,median_cut,...]
                                           [--shard-size 64] [--side 320,640] [--keep DIR]

- Photos: real ones (bench/_folder_photos.py: Debian's wallpaper packages, scikit-image and
  scikit-learn photos, several crops of each source; its train and test sides both), longest
  side in ``--side``, written to a temporary input folder as JPEG (quality 90) and PNG, in turn.
- The run: ``snakemake --cores 2`` as a user runs it, on that folder with ``shard_size`` set
  so that there are several shards, the profile of the workflow included.
- Figures, all CPU seconds (user + system), from this one run:
  - *method*: the records' ``cpu_time_s``, the work on each image (read and hash it, the
    method, exactly-k finalisation, the bound, the PNG written and re-scored);
  - *jobs*: the shard jobs' own processes (their logs' ``job process CPU``: start-up, imports,
    the reuse checks, records and manifests included);
  - *run*: the whole process tree of ``snakemake`` (``os.wait4``): its parse, DAG and
    scheduling, the start check, every job, the report and the run's close; of it, snakemake's
    own process (its threads included: /proc, sampled every 0.1 s).
  Overhead = run - method, as a share of method. Images per second per core = images / CPU s.
The machine may be shared: CPU seconds, unlike wall time, barely depend on the load.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # _folder_photos imports _photos
FAST = ["kmeans", "median_cut", "octree", "libimagequant", "direct"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
JOB_CPU = re.compile(r"job process CPU ([\d.]+) s")


def write_photos(folder: Path, count: int, side: tuple[int, int]) -> str:
    """``count`` real photos into ``folder`` (test sources whole, then training crops); their
    description."""
    from _folder_photos import split

    train, test, _, text = split(n_train=count, longest=side[1], crop_side=side)
    photos = (test + train)[:count]
    if len(photos) < count:
        sys.exit(f"only {len(photos)} photos found, {count} asked")
    folder.mkdir(parents=True)
    for i, pixels in enumerate(photos):
        image = Image.fromarray(pixels)
        if i % 2:
            image.save(folder / f"photo{i:04d}.png")
        else:
            image.save(folder / f"photo{i:04d}.jpg", quality=90)
    return text


def own_cpu(pid: int) -> float | None:
    """CPU s of process ``pid`` itself, its threads included, not its children (/proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_workflow(workdir: Path, config: dict) -> tuple[float, float, float, int]:
    """(wall s, CPU s of the whole snakemake process tree, CPU s of snakemake's own process
    (sampled every 0.1 s, so the last tenth of a second may be missing), exit status)."""
    (workdir / "bench.yaml").write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2",
           "--configfile", str(REPO / "config/config.yaml"), str(workdir / "bench.yaml")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        main_cpu = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            main_cpu = own_cpu(proc.pid) or main_cpu
            time.sleep(0.1)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, main_cpu, proc.returncode


def method_cpu(results: Path, method: str) -> tuple[int, int, float]:
    """(records, ok records, sum of their cpu_time_s) of one method."""
    n = ok = 0
    cpu = 0.0
    for path in (results / method).glob("*.json"):
        record = json.loads(path.read_text())
        n, ok, cpu = n + 1, ok + (record["status"] == "ok"), cpu + record["cpu_time_s"]
    return n, ok, cpu


def jobs_cpu(logs: Path, method: str) -> tuple[int, float]:
    """(shard jobs, their processes' CPU s) from the method's shard logs."""
    figures = [float(m.group(1)) for log in (logs / "shards" / method).glob("*.log")
               if (m := JOB_CPU.search(log.read_text()))]
    return len(figures), sum(figures)


def report_cpu(benchmarks: Path) -> float | None:
    """The report job's CPU s from its Snakemake benchmark (sampled by Snakemake: approximate)."""
    try:
        with open(benchmarks / "report.tsv", newline="") as f:
            row = next(csv.DictReader(f, dialect="excel-tab"))
        return float(row["cpu_time"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--methods", default=",".join(FAST), help="comma-separated; cnn is slow")
    parser.add_argument("--shard-size", type=int, default=64, help="images per shard (several shards)")
    parser.add_argument("--side", default="320,640", help="longest side of the photos, min,max px")
    parser.add_argument("--keep", type=Path, help="work in this new folder and keep it")
    args = parser.parse_args()
    methods = args.methods.split(",")
    side = tuple(int(v) for v in args.side.split(","))
    root = args.keep or Path(tempfile.mkdtemp(prefix="cq-throughput-"))
    text = write_photos(root / "photos", args.photos, side)
    config = {"input_dir": str(root / "photos"), "results_dir": str(root / "results"), "methods": methods,
              "shard_size": args.shard_size}
    load = os.getloadavg()
    wall, run_cpu, main_cpu, status = run_workflow(root, config)
    if status != 0:
        sys.exit(f"snakemake exited {status}; see {root / 'snakemake.log'}")
    results = root / "results"
    print(f"{args.photos} photos: {text}")
    print(f"snakemake --cores 2, shard_size {args.shard_size}; load average at start "
          f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}; wall {wall:.0f} s\n")
    print("| method | images (ok) | shard jobs | method CPU s | jobs' CPU s | in-job overhead "
          "| images/s/core, method | images/s/core, jobs |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    total_method = total_jobs = 0.0
    for method in methods:
        n, ok, cpu = method_cpu(results, method)
        jobs, jcpu = jobs_cpu(results / "logs", method)
        total_method, total_jobs = total_method + cpu, total_jobs + jcpu
        in_job, per_core = ((f"{(jcpu - cpu) / cpu:.1%}", f"{n / jcpu:.2f}") if jobs else ("-", "-"))
        print(f"| {method} | {n} ({ok}) | {jobs} | {cpu:.1f} | {jcpu:.1f} | {in_job} | {n / cpu:.2f} | {per_core} |")
    report = report_cpu(results / "benchmarks")
    outside = run_cpu - total_jobs
    print(f"\nwhole run (snakemake process tree): {run_cpu:.1f} CPU s; methods {total_method:.1f}; "
          f"shard jobs {total_jobs:.1f} (of which overhead {total_jobs - total_method:.1f}); outside the "
          f"shard jobs {outside:.1f}: snakemake's own process {main_cpu:.1f} (parse, DAG, scheduling, "
          f"benchmark sampling, start check, close), report job {'?' if report is None else f'{report:.1f}'} "
          f"(Snakemake's benchmark, sampled), rest {outside - main_cpu - (report or 0):.1f}")
    print(f"Snakemake + cq overhead: {run_cpu - total_method:.1f} CPU s = "
          f"{(run_cpu - total_method) / total_method:.1%} of the methods' CPU")
    if args.keep is None:
        import shutil

        shutil.rmtree(root)


if __name__ == "__main__":
    main()
