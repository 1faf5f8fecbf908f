"""Chaos nights: many `cq nightly` runs over a folder of real photographs, with faults injected
between and during the nights, and the invariants of issue 11 checked after each one.

    python bench/chaos.py [--nights 100] [--seed 1] [--images 10] [--workdir DIR]

Faults (a few per night, drawn from a seeded generator, so a run can be replayed):
  same_mtime     other content, the old mtime set back (``touch -r``)
  older_mtime    other content with an older mtime (``cp -p`` of an older version)
  touch          a touch, content unchanged (must not rerun; counted, not a fault of cq's)
  new / delete   an image added / removed
  long_name      an image whose name is 240 bytes long
  kill_run       the whole run killed (SIGKILL to its process group) at a random moment,
                 the first 300 ms (the lock window) included
  kill_job       one job process killed mid-run (as the OOM killer does)
  overwrite      an image overwritten while the run goes on
  concurrent     a second `cq nightly` on the same results from another working directory
  full_disk      the results' tmpfs filled up for the night (root only; else skipped)

Invariants, after every night:
  1. every ok record that cq holds current (cq.freshness) matches the image's bytes now and
     the job's spec; after a night with no fault during it, every ok record does;
  2. after a night that ended (not killed, disk not full), every (image, method) has a row in
     report.csv: a record, or an error row saying it is missing and why;
  3. a report exists (from the first finished night on);
  4. no night is refused by a lock when no other run is live;
  5. history.jsonl parses, line by line.
Prints the nights, the faults injected by kind, the violations (each with its night), and the
time taken.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cq import freshness  # noqa: E402
from cq.discover import result_path  # noqa: E402
from cq.methods import get_method  # noqa: E402
from cq.objective import Weights  # noqa: E402
from cq.pipeline import Job, ReadOptions  # noqa: E402

METHODS = ["octree", "median_cut", "kmeans"]
BETWEEN = ["same_mtime", "older_mtime", "touch", "new", "delete", "long_name"]
DURING = ["kill_run", "kill_job", "overwrite", "concurrent", "full_disk"]


def photographs() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]


class Folder:
    """The photographs folder and how to change it."""

    def __init__(self, root: Path, rng: random.Random):
        self.root, self.rng, self.sources, self.count = root, rng, photographs(), 0
        root.mkdir(parents=True, exist_ok=True)

    def crop(self) -> np.ndarray:
        src = self.rng.choice(self.sources)
        h, w = self.rng.randint(24, 40), self.rng.randint(32, 56)
        y, x = self.rng.randrange(src.shape[0] - h), self.rng.randrange(src.shape[1] - w)
        return np.ascontiguousarray(src[y:y + h, x:x + w, :3])

    def write(self, path: Path, pixels=None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.chaos")
        Image.fromarray(self.crop() if pixels is None else pixels).save(tmp, format="PNG")
        os.replace(tmp, path)

    def new(self, name: str | None = None) -> Path:
        self.count += 1
        path = self.root / (name or f"{'sub/' if self.count % 3 == 0 else ''}img{self.count:04d}.png")
        self.write(path)
        return path

    def images(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*.png") if not p.name.startswith("."))

    def pick(self) -> Path | None:
        images = self.images()
        return self.rng.choice(images) if images else None


def job_fingerprints(config: dict) -> dict[str, str]:
    read = config["read"]
    return {m: freshness.job_fingerprint(Job(method=m, k=config["k"], weights=Weights(**config["weights"]),
                                             read=ReadOptions(tuple(read["background"]), read["max_pixels"]),
                                             params={**get_method(m).defaults, **(config.get(m) or {})}))
            for m in METHODS}


class Chaos:
    def __init__(self, workdir: Path, seed: int, n_images: int):
        self.rng = random.Random(seed)
        self.workdir, self.images = workdir, workdir / "images"
        self.results = workdir / "results"
        self.folder = Folder(self.images, self.rng)
        for _ in range(n_images):
            self.folder.new()
        self.tmpfs = self._mount(self.results)
        config = {"input_dir": "images", "results_dir": "results", "methods": METHODS,
                  "kmeans": {"n_init": 1}, "shard_size": 0}
        (workdir / "chaos.yaml").write_text(yaml.safe_dump(config))
        with open(REPO / "config/config.yaml") as f:
            full = {**yaml.safe_load(f), **config}
        self.fingerprints = job_fingerprints(full)
        self.other = workdir / "elsewhere"
        self.other.mkdir(exist_ok=True)
        (self.other / "abs.yaml").write_text(yaml.safe_dump(
            {**config, "input_dir": str(self.images), "results_dir": str(self.results)}))
        self.faults, self.violations, self.durations = collections.Counter(), [], []
        self.report_seen, self.verbose = False, False
        self.env = self._env()

    def _env(self) -> dict:
        shim = self.workdir / ".shim"  # no SLURM controller wait at every Snakemake start
        shim.mkdir(exist_ok=True)
        (shim / "scontrol").write_text("#!/bin/sh\nexit 1\n")
        (shim / "scontrol").chmod(0o755)
        return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
                "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    @staticmethod
    def _mount(folder: Path) -> bool:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return False
        return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                              capture_output=True).returncode == 0

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", str(self.results)], capture_output=True)

    def command(self, workdir: Path, config: Path) -> list[str]:
        return [sys.executable, "-m", "cq.nightly", "-d", str(workdir), "--cores", "2",
                "--configfile", str(REPO / "config/config.yaml"), str(config)]

    # --- faults between nights ----------------------------------------------------------------

    def between(self, kind: str) -> None:
        path = self.folder.pick()
        if kind in ("same_mtime", "older_mtime", "touch", "delete") and path is None:
            return
        if kind == "same_mtime":
            st = path.stat()
            self.folder.write(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        elif kind == "older_mtime":
            other = self.workdir / "older.png"
            self.folder.write(other)
            os.utime(other, (1_000_000_000, 1_000_000_000))
            shutil.copy2(other, path)
        elif kind == "touch":
            os.utime(path, None)
        elif kind == "new":
            self.folder.new()
        elif kind == "delete":
            path.unlink()
        elif kind == "long_name":
            self.folder.new(name=f"long/{'n' * 236}{self.folder.count:04d}.png")
        self.faults[kind] += 1

    # --- a night, with faults during it -------------------------------------------------------

    def night(self, during: list[str]) -> dict:
        filler = None
        if "full_disk" in during:
            if self.tmpfs:
                filler = self._fill()
                self.faults["full_disk"] += 1
            during = [d for d in during if d != "full_disk"]
        typical = sorted(self.durations)[len(self.durations) // 2] if self.durations else 8.0
        t0 = time.monotonic()
        proc = subprocess.Popen(self.command(self.workdir, self.workdir / "chaos.yaml"), env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        output = []
        reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
        reader.start()
        killed, concurrent_rc = False, None
        actions = sorted((self.rng.uniform(0.0, 1.2 * typical) if d != "kill_run" or self.rng.random() > 0.3
                          else self.rng.uniform(0.0, 0.3), d) for d in during)
        for at, kind in actions:
            while time.monotonic() - t0 < at and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is not None:
                break  # the night ended before this fault's moment: not injected
            self.faults[kind] += 1
            if kind == "kill_run":
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            if kind == "kill_job":
                self._kill_a_job(proc.pid)
            elif kind == "overwrite":
                path = self.folder.pick()
                if path is not None:
                    self.folder.write(path)
            elif kind == "concurrent":
                second = subprocess.run(self.command(self.other, self.other / "abs.yaml"), env=self.env,
                                        capture_output=True, text=True, timeout=600)
                concurrent_rc = second.returncode
                if second.returncode != 75 and proc.poll() is None:
                    self.violate("a second run was not refused while the first was live "
                                 f"(rc {second.returncode}): {second.stderr[-300:]}")
        rc = proc.wait()
        reader.join(timeout=5)
        if killed:
            self._reap(proc.pid)
        else:
            self.durations.append(time.monotonic() - t0)
        if filler is not None:
            filler.unlink(missing_ok=True)
        return {"rc": rc, "killed": killed, "full_disk": filler is not None, "during": bool(during),
                "concurrent_rc": concurrent_rc, "output": "".join(output)}

    def _fill(self) -> Path:
        filler = self.results / "chaos.filler"
        try:
            with open(filler, "wb") as f:
                while True:
                    f.write(b"\0" * (1 << 16))
                    f.flush()
        except OSError:
            pass  # full (already full, even: then there is no filler to remove)
        return filler

    def used(self) -> str:
        st = os.statvfs(self.results)
        return f"{(st.f_blocks - st.f_bfree) * st.f_frsize / 2**20:.1f} MiB used"

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    pass
        return out

    def _kill_a_job(self, root: int) -> None:
        """SIGKILL one job process: a Python process two or more levels under cq nightly."""
        snakemake = self._children(root)
        jobs = [j for s in snakemake for j in self._children(s)]
        jobs += [g for j in jobs for g in self._children(j)]
        if jobs:
            try:
                os.kill(self.rng.choice(jobs), signal.SIGKILL)
            except ProcessLookupError:
                pass

    @staticmethod
    def _reap(pgid: int) -> None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- invariants -----------------------------------------------------------------------

    def violate(self, message: str) -> None:
        self.violations.append((self.night_no, message))

    def check(self, night: dict) -> None:
        if night["rc"] == 75 and not night["killed"]:
            self.violate(f"refused by a lock with no other run live: {night['output'][-300:]}")
        images = [str(p.relative_to(self.images)) for p in self.folder.images()]
        calm = not night["during"] and not night["killed"] and not night["full_disk"]
        for rel in images:
            image = self.images / rel
            try:
                sha = freshness.file_sha256(image)
            except OSError:
                continue
            for method in METHODS:
                json_path = result_path(str(self.results), method, rel, ".json")
                record = freshness.load_record(json_path)
                if not record or record.get("status") != "ok":
                    continue
                truly = record["image"].get("sha256") == sha and \
                    record.get("job_fingerprint") == self.fingerprints[method]
                held = freshness.check(record, image, result_path(str(self.results), method, rel, ".png"),
                                       self.fingerprints[method])[0]
                if held and not truly:
                    self.violate(f"{method} on {rel}: a stale ok record is held current")
                elif calm and not truly:
                    self.violate(f"{method} on {rel}: an ok record does not match after a calm night")
        report = self.results / "report.csv"
        if report.exists() and (self.results / "report.html").exists():
            self.report_seen = True
        elif self.report_seen:
            self.violate("no report")
        if not night["killed"] and not night["full_disk"] and night["rc"] != 75:
            self._check_report(report, images)
        try:
            for line in (self.results / "history.jsonl").read_text().splitlines():
                json.loads(line)
        except FileNotFoundError:
            pass
        except ValueError as e:
            self.violate(f"history.jsonl: {e}")

    def _check_report(self, report: Path, images: list[str]) -> None:
        try:
            with open(report, newline="", encoding="utf-8") as f:
                rows = {(r["image"], r["method"]) for r in csv.DictReader(f)}
        except OSError as e:
            self.violate(f"report.csv unreadable: {e}")
            return
        for rel in images:
            for method in METHODS:
                if (rel, method) not in rows:
                    self.violate(f"{method} on {rel}: neither a result nor listed as missing in the report")

    # --- the whole run ------------------------------------------------------------------------

    def run(self, nights: int) -> None:
        for self.night_no in range(1, nights + 1):
            if self.night_no > 1:
                for kind in self.rng.sample(BETWEEN, self.rng.randint(2, 3)):
                    self.between(kind)
            during = self.rng.sample(DURING, self.rng.randint(1, 2)) if self.night_no > 1 else []
            night = self.night(during)
            before = len(self.violations)
            self.check(night)
            if len(self.violations) > before and self.verbose:
                print(night["output"][-3000:])
            print(f"night {self.night_no:3d}: rc {night['rc']:3d}  during {','.join(during) or '-':<28} "
                  f"faults so far {sum(self.faults.values()):4d}  violations {len(self.violations)}  "
                  f"{self.used()}", flush=True)
        # One calm night at the end: everything must then be current and listed.
        self.night_no = nights + 1
        self.check(self.night([]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--verbose", action="store_true", help="print the output of a night with violations")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cq-chaos-"))
    chaos = Chaos(workdir, args.seed, args.images)
    chaos.verbose = args.verbose
    t0, cpu0 = time.perf_counter(), os.times()
    try:
        chaos.run(args.nights)
    finally:
        chaos.close()
    cpu1 = os.times()
    cpu = cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system
    print(f"\nworkdir {workdir}; tmpfs for results: {chaos.tmpfs}; load {os.getloadavg()[0]:.2f}")
    print(f"nights {args.nights} (+1 calm check night), faults injected {sum(chaos.faults.values())}: "
          + ", ".join(f"{k} {v}" for k, v in sorted(chaos.faults.items())))
    print(f"violations {len(chaos.violations)}")
    for night, message in chaos.violations[:30]:
        print(f"  night {night}: {message}")
    print(f"wall {time.perf_counter() - t0:.0f} s, cpu (children) {cpu:.0f} s")
    sys.exit(1 if chaos.violations else 0)


if __name__ == "__main__":
    main()
