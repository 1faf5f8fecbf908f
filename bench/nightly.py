"""What a nightly run costs: a folder of N images already processed, then a night with nothing
new, then a night with a few new images (profiles/nightly, the real workflow).

    python bench/nightly.py [--images 1000] [--new 10] [--methods octree] [--workdir DIR]
    python bench/nightly.py --images 2000 --compare BASE_CHECKOUT [--rounds 3]

Runs `cq nightly` (this checkout's nightly command). With ``--compare``, a second workspace is
run by the checkout at BASE_CHECKOUT (e.g. ``git worktree add /tmp/base e541aa1``) the way its
README said (its `cq nightly`, or ``snakemake --workflow-profile profiles/nightly`` before
there was one), and the idle nights of both alternate in one run, so the two costs are
measured under the same load.

Prints wall time and CPU time (this process's children: Snakemake and its jobs) of each run;
wall time is load-sensitive on a shared machine, CPU time much less. The first run (every
image new) is set-up, timed too. The SLURM executor plugin runs `scontrol show config` when
Snakemake starts, which waits 10 s where SLURM is installed but its controller is down; a
stand-in `scontrol` that fails at once is put first on PATH unless --keep-scontrol.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def photos():
    from skimage import data

    return [data.chelsea(), data.astronaut(), data.coffee(), data.rocket()]


def write_images(folder: Path, start: int, count: int, sources) -> None:
    """``count`` distinct 48 x 32 crops, in folders of 100 (``batch07/img00712.png``)."""
    for i in range(start, start + count):
        src = sources[i % len(sources)]
        y, x = (i * 7) % (src.shape[0] - 32), (i * 13) % (src.shape[1] - 48)
        path = folder / f"batch{i // 100:02d}" / f"img{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(src[y:y + 32, x:x + 48, :3])).save(path)


def command(repo: Path, workdir: Path, via: str) -> list[str]:
    if via == "cq":
        return [sys.executable, "-m", "cq.nightly", "-d", str(workdir), "--cores", "2",  # workflow: CQ_WORKFLOW
                "--configfile", str(repo / "config/config.yaml"), str(workdir / "bench.yaml")]
    return [SNAKEMAKE, "-s", str(repo / "Snakefile"), "--directory", str(workdir),
            "--workflow-profile", str(repo / "profiles/nightly"), "--cores", "2",
            "--configfile", str(repo / "config/config.yaml"), str(workdir / "bench.yaml")]


def run(workdir: Path, env: dict, label: str, repo: Path = REPO, via: str = "cq") -> dict:
    env = {**env, "PYTHONPATH": str(repo), "CQ_WORKFLOW": str(repo)}  # the workflow cq nightly runs
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command(repo, workdir, via), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{label}: the run failed\n{done.stderr[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = [json.loads(x) for x in (workdir / "results/history.jsonl").read_text().splitlines()][-1]
    jobs = done.stderr.count("rule quantize")
    print(f"{label:<36} wall {wall:7.1f} s   cpu {cpu:7.1f} s   quantize jobs {jobs:5d}   "
          f"counts {line['counts']}", flush=True)
    return {"label": label, "wall_s": wall, "cpu_s": cpu, "jobs": jobs, "counts": line["counts"]}


def prepare(workdir: Path, images: int, methods: str, sources) -> None:
    (workdir / "bench.yaml").write_text(yaml.safe_dump(
        {"input_dir": "images", "results_dir": "results", "methods": methods.split(",")}))
    if not (workdir / "images").exists():
        write_images(workdir / "images", 0, images, sources)


def compare(args, env, sources) -> None:
    """Idle nights of this checkout (cq nightly) and of a base checkout (its snakemake line),
    alternating, in one run."""
    base = args.compare.resolve()
    base_via = "cq" if (base / "cq/nightly.py").exists() else "snakemake"
    sides = {"this": (args.workdir / "this", REPO, "cq"), "base": (args.workdir / "base", base, base_via)}
    for name, (workdir, repo, via) in sides.items():
        workdir.mkdir(parents=True, exist_ok=True)
        prepare(workdir, args.images, args.methods, sources)
        if not (workdir / "results/history.jsonl").exists():
            run(workdir, env, f"{name}: first night ({args.images} new)", repo, via)
    rows = []
    for i in range(args.rounds):
        for name, (workdir, repo, via) in sides.items():
            rows.append({"side": name, **run(workdir, env, f"{name}: nothing new #{i + 1}", repo, via)})
    for name in sides:
        mine = [r for r in rows if r["side"] == name]
        print(f"{name}: idle night median wall {sorted(r['wall_s'] for r in mine)[len(mine) // 2]:.1f} s, "
              f"median cpu {sorted(r['cpu_s'] for r in mine)[len(mine) // 2]:.1f} s")
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--methods", default="octree", help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep-scontrol", action="store_true")
    parser.add_argument("--compare", type=Path, help="a base checkout to measure against, in the same run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cq-bench-nightly-"))
    workdir = args.workdir
    env = dict(os.environ)
    if not args.keep_scontrol:
        shim = workdir / ".shim"
        shim.mkdir(parents=True, exist_ok=True)
        (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (shim / "scontrol").chmod(0o755)
        env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    sources = photos()
    print(f"workdir {workdir}; {args.images} images x {args.methods}; cores 2; load {os.getloadavg()[0]:.2f}")
    if args.compare:
        compare(args, env, sources)
        return
    prepare(workdir, args.images, args.methods, sources)
    if not (workdir / "results/history.jsonl").exists():
        run(workdir, env, f"first night ({args.images} new)")
    rows = [run(workdir, env, "nothing new"), run(workdir, env, "nothing new (again)")]
    write_images(workdir / "images", args.images + 10_000, args.new, sources)
    rows.append(run(workdir, env, f"{args.new} new among {args.images}"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
