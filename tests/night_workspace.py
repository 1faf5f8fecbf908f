"""A folder that changes and the nights run on it, with the invariants every night must keep.

Shared by the state machine (tests/test_night_machine.py) and its long profile
(bench/chaos.py). The invariants are checked against an oracle of their own: the folder as
this module walks it, the config as it wrote it, the records and the PNGs as files; cq's own
freshness or index code is not asked.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from conftest import cq_nightly_command, env, held_env
from cq.discover import result_path

EXTENSIONS = ("png", "bmp")
DEFAULT_WEIGHTS = {"mse": 2, "max_cost": 21, "mean_cost": 42}
PARAM_DEFAULTS = {"octree": {}, "median_cut": {}, "kmeans": {"seed": 0, "n_init": 4, "max_iter": 300}}
RESULT_FOLDERS_NOT_METHODS = {"logs", "benchmarks", "report_files"}
EX_LOCKED = 75


def pixels(seed: int, size=(8, 6)) -> np.ndarray:
    """Random colours (48 pixels: more distinct colours than any k used here)."""
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Workspace:
    """``images/`` (the input), ``results/`` (on its own small tmpfs when root can mount one),
    the config, and a second working directory for a run started from elsewhere."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root or tempfile.mkdtemp(prefix="cq-night-"))
        self.images, self.results = self.root / "images", self.root / "results"
        self.images.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(exist_ok=True)
        self.tmpfs = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(self.results)], capture_output=True).returncode == 0
        self.elsewhere = self.root / "elsewhere"
        self.elsewhere.mkdir(exist_ok=True)
        self.config = {"input_dir": "images", "results_dir": "results", "methods": ["octree"], "k": 4,
                       "weights": dict(DEFAULT_WEIGHTS), "extensions": list(EXTENSIONS), "shard_size": 0}
        self.write_config()

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.results)], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # --- the folder ---------------------------------------------------------------------------

    def write_image(self, rel: str, seed: int, size=(8, 6)) -> Path:
        """Write an image atomically (a run never reads half of it); BMP by its extension."""
        path = self.images / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".machine.{os.getpid()}.tmp"
        Image.fromarray(pixels(seed, size)).save(tmp, format="BMP" if rel.endswith(".bmp") else "PNG")
        os.replace(tmp, path)
        return path

    def files(self) -> list[str]:
        """Every file under images/ (relative paths), whatever cq makes of it."""
        return sorted(str(p.relative_to(self.images)) for p in self.images.rglob("*") if p.is_file())

    def accepted(self) -> list[str]:
        """The images cq must process: an image extension, no hidden part, no line break."""
        return [rel for rel in self.files()
                if rel.rpartition(".")[2].lower() in EXTENSIONS and rel.rpartition(".")[0].rpartition("/")[2]
                and not any(part.startswith(".") for part in rel.split("/")) and "\n" not in rel and "\r" not in rel]

    def inputs(self) -> dict[str, tuple[str, int]]:
        """(sha256, mtime_ns) of every input file: what no night may change."""
        return {rel: (sha256(self.images / rel), (self.images / rel).stat().st_mtime_ns) for rel in self.files()}

    # --- the config and the runs --------------------------------------------------------------

    def write_config(self) -> None:
        (self.root / "machine.yaml").write_text(yaml.safe_dump(self.config, allow_unicode=True))
        (self.elsewhere / "abs.yaml").write_text(yaml.safe_dump(
            {**self.config, "input_dir": str(self.images), "results_dir": str(self.results)}, allow_unicode=True))

    def command(self, elsewhere: bool = False, accept_fewer: bool = False) -> list[str]:
        if elsewhere:
            cmd = cq_nightly_command(self.elsewhere, self.elsewhere / "abs.yaml")
        else:
            cmd = cq_nightly_command(self.root, self.root / "machine.yaml")
        return cmd + ["--accept-fewer"] * accept_fewer

    def start(self, elsewhere: bool = False, environ: dict | None = None, accept_fewer: bool = False):
        out = tempfile.TemporaryFile(mode="w+", dir=self.root)
        proc = subprocess.Popen(self.command(elsewhere, accept_fewer), stdout=out, stderr=subprocess.STDOUT,
                                text=True, env=environ or env(), start_new_session=True)
        proc.out = out
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
        rc = proc.wait(timeout=timeout)
        proc.out.seek(0)
        output = proc.out.read()
        proc.out.close()
        return rc, output

    def night(self, elsewhere: bool = False, accept_fewer: bool = False) -> tuple[int, str]:
        return self.finish(self.start(elsewhere, accept_fewer=accept_fewer))

    def held(self) -> tuple[dict, Path]:
        """An environment whose jobs wait while the returned file exists."""
        hold = self.root / "hold"
        Path(f"{hold}.pids").unlink(missing_ok=True)
        return held_env(hold), hold

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @staticmethod
    def wait_for(condition, proc: subprocess.Popen, timeout: float = 120) -> bool:
        """Wait until ``condition()`` or the run ends; True when the condition came first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and proc.poll() is None:
            if condition():
                return True
            time.sleep(0.02)
        return condition() and proc.poll() is None

    # --- the invariants -------------------------------------------------------------------------

    def products(self) -> dict[str, bytes]:
        """The report and best/, byte for byte: what a refused night must leave as it was."""
        paths = [self.results / "report.csv", self.results / "report.html", *sorted((self.results / "best").rglob("*"))]
        return {str(p): p.read_bytes() for p in paths if p.is_file()}

    def created(self) -> dict[tuple[str, str], str]:
        """(image, method) -> its record's creation time: a night computed the ones it changes."""
        out = {}
        for rel in self.accepted():
            for method in self.config["methods"]:
                record = self._record(rel, method)
                if record:
                    out[rel, method] = record.get("created")
        return out

    def history(self) -> list[dict]:
        try:
            lines = (self.results / "history.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines]

    def violations(self, *, complete: bool = True, skip=()) -> list[str]:
        """What is wrong after a night that ended. ``complete``: no fault hit the night, so
        every image has a current record; else a missing one must be a report row saying so.
        ``skip``: images changed during the night (their record may be of the old content)."""
        out = self._temporaries() + self._orphan_pngs() + self._dropped_listed()
        methods, rows = self.config["methods"], self._report_rows()
        images = self.accepted()
        if rows is None:
            return out + ["no report.csv"]
        listed = {image for image, _ in rows}
        if listed - set(images):
            out.append(f"report lists images that are not there: {sorted(listed - set(images))[:3]}")
        for rel in images:
            records = {}
            for method in methods:
                row = rows.get((rel, method))
                if row is None:
                    out.append(f"{method} on {rel!r}: no report row")
                record = self._record(rel, method)
                if record is None:
                    if complete or row is None or "missing" not in (row.get("error") or ""):
                        out.append(f"{method} on {rel!r}: no record (report row: {row and row.get('error')!r})")
                    continue
                if rel not in skip:
                    out += self._current(rel, method, record, complete)
                records[method] = record
            if rel not in skip and (complete or len(records) == len(methods)):
                out += self._best(rel, records)
        return out

    def _record(self, rel: str, method: str) -> dict | None:
        try:
            return json.loads(Path(result_path(str(self.results), method, rel, ".json")).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as e:
            return {"status": "unreadable", "error": str(e)}

    def _current(self, rel: str, method: str, record: dict, complete: bool) -> list[str]:
        """A record is current: this content, this spec, k colours; or an error saying why."""
        where = f"{method} on {rel!r}"
        if record.get("status") != "ok":
            if not record.get("error"):
                return [f"{where}: {record.get('status')} record without a reason"]
            return [f"{where}: a transient failure not retried: {record['error']}"] if complete and record.get(
                "transient") else []
        params = {**PARAM_DEFAULTS[method], **(self.config.get(method) or {})}
        wrong = {"sha256": (record["image"]["sha256"], sha256(self.images / rel)),
                 "k": (record["k"], self.config["k"]), "params": (record["params"], params),
                 "weights": ({k: float(v) for k, v in record["weights"].items()},
                             {k: float(v) for k, v in self.config["weights"].items()}),
                 "colours": (len(record["palette"]), self.config["k"])}
        out = [f"{where}: {key} is {got!r}, expected {want!r}" for key, (got, want) in wrong.items() if got != want]
        png = Path(result_path(str(self.results), method, rel, ".png"))
        try:
            with Image.open(png) as im:
                colours = len(im.convert("RGB").getcolors(1 << 16))
            if colours > self.config["k"]:
                out.append(f"{where}: its PNG has {colours} colours")
        except OSError as e:
            out.append(f"{where}: ok record without a readable PNG ({e})")
        return out

    def _best(self, rel: str, records: dict) -> list[str]:
        """best/ holds the lowest-scoring ok result (ties: the first method), or nothing."""
        methods = self.config["methods"]
        oks = [(r["scores"]["score"], methods.index(m), m) for m, r in records.items() if r.get("status") == "ok"]
        best_json = Path(result_path(str(self.results), "best", rel, ".json"))
        best_png = best_json.with_suffix(".png")
        if not oks:
            return [f"best/ of {rel!r} without an ok result"] if best_json.exists() or best_png.exists() else []
        method = min(oks)[2]
        try:
            best = json.loads(best_json.read_text(encoding="utf-8"))
            same_png = best_png.read_bytes() == Path(result_path(str(self.results), method, rel, ".png")).read_bytes()
        except OSError as e:
            return [f"best/ of {rel!r}: {e}"]
        if best.get("method") != method or best.get("job_fingerprint") != records[method].get("job_fingerprint") \
                or best["image"].get("sha256") != records[method]["image"]["sha256"] or not same_png:
            return [f"best/ of {rel!r} is not {method}'s current result"]
        return []

    def _report_rows(self) -> dict | None:
        try:
            with open(self.results / "report.csv", newline="", encoding="utf-8") as f:
                return {(r["image"], r["method"]): r for r in csv.DictReader(f)}
        except FileNotFoundError:
            return None

    def _temporaries(self) -> list[str]:
        found = [str(p) for top in (self.results, self.images) for p in top.rglob(".*.tmp")]
        return [f"temporary files left: {found[:3]}"] if found else []

    def _dropped_listed(self) -> list[str]:
        """A method dropped from the config, its results kept, is named in the report."""
        try:
            page = (self.results / "report.html").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [f"dropped method {folder.name} not listed in the report" for folder in self._method_folders()
                if folder.name not in self.config["methods"] and folder.name != "best"
                and any(folder.rglob("*.json")) and f"{folder.name}: dropped from the config" not in page]

    def _method_folders(self) -> list[Path]:
        return [folder for folder in self.results.iterdir() if folder.is_dir() and not folder.name.startswith(".")
                and folder.name not in RESULT_FOLDERS_NOT_METHODS]

    def _orphan_pngs(self) -> list[str]:
        out = []
        for folder in self._method_folders():
            for png in folder.rglob("*.png"):
                if not png.with_suffix(".json").exists():
                    out.append(f"a PNG without a record: {png.relative_to(self.results)}")
        return out[:3]
