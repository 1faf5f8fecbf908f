"""Run history: what each run of the workflow found and did, one JSON line per run.

The workflow calls :func:`begin` when a run starts (Snakemake's ``onstart``, in the main
process, after it holds its lock) and :func:`finish` when it ends (``onsuccess`` /
``onerror``). No Snakemake import here.

- ``begin`` compares the images found now (relative path, size, mtime, and a sha256 for new
  or touched files) with the snapshot of the last finished run, giving the counts ``new``,
  ``changed`` (other content), ``unchanged`` (a touch alone is unchanged) and ``deleted``;
  optionally prunes the results of deleted images; and writes ``.history/current.json``, the
  run in progress, naming its process.
- ``finish`` adds ``failed`` (error records written by this run), ``missing`` (records still
  absent, e.g. a job that died) and the time per method (the sum of ``wall_time_s`` of the
  records written by this run), appends the line to ``{results_dir}/history.jsonl``
  (rewritten atomically: never a half line) and makes the new snapshot the reference.
- A run that was killed (SIGKILL, power cut) never finishes: the next ``begin`` finds its
  ``current.json``, appends it with status ``interrupted`` and removes the temporary files
  its interrupted writes left (``.name.XXXX.tmp``; never read as results).
- :func:`live_run` gives the line of the run in progress from the records the report holds,
  so the report built by this very run already shows it.
- ``python -m cq.history stale RESULTS_DIR`` exits 0 only when the run recorded in progress
  is provably dead (same host, same boot, its process gone): then ``snakemake --unlock`` is
  safe before a nightly run (see the README).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from cq.discover import result_path
from cq.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
STATE_DIR = ".history"
SNAPSHOT = "snapshot.json"
NEXT_SNAPSHOT = "snapshot.next.json"
CURRENT = "current.json"
COUNT_KEYS = ("new", "changed", "unchanged", "deleted", "failed", "missing")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def _parse(stamp) -> datetime | None:
    try:
        t = datetime.fromisoformat(str(stamp))
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def _read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def _write_json(path: Path, data) -> None:
    atomic_write_bytes(path, json.dumps(data, ensure_ascii=False).encode("utf-8"))


def _sha256(path: str) -> str | None:
    from cq.fsutil import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


# --------------------------------------------------------------------------- snapshots

def scan(input_dir: str, images: list[str], previous: dict) -> dict:
    """``{relpath: {"size", "mtime_ns", "sha256"}}`` of ``images``; a file whose size and mtime
    match ``previous`` keeps its recorded hash, any other is hashed (an unreadable one: None)."""
    snap = {}
    for rel in images:
        path = os.path.join(input_dir, rel)
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None
        old = previous.get(rel)
        if old and size is not None and (old.get("size"), old.get("mtime_ns")) == (size, mtime):
            sha = old.get("sha256")
        else:
            sha = _sha256(path) if size is not None else None
        snap[rel] = {"size": size, "mtime_ns": mtime, "sha256": sha}
    return snap


def compare(previous: dict, current: dict) -> tuple[dict, list[str]]:
    """Counts new / changed / unchanged / deleted, and the deleted paths (sorted)."""
    counts = dict.fromkeys(("new", "changed", "unchanged", "deleted"), 0)
    for rel, now in current.items():
        old = previous.get(rel)
        if old is None:
            counts["new"] += 1
        elif now["sha256"] is not None and now["sha256"] == old.get("sha256"):
            counts["unchanged"] += 1
        elif now["sha256"] is None and (old.get("size"), old.get("mtime_ns")) == (now["size"], now["mtime_ns"]):
            counts["unchanged"] += 1
        else:
            counts["changed"] += 1
    deleted = sorted(set(previous) - set(current))
    counts["deleted"] = len(deleted)
    return counts, deleted


def prune(deleted: list[str], results_dir: str, other_dirs=()) -> int:
    """Remove the results (every method's PNG and JSON) and the logs and benchmarks of deleted
    images; return how many files went."""
    removed = 0
    roots = [(results_dir, (".json", ".png"))] + [(d, (".log", ".tsv")) for d in other_dirs if d]
    for root, suffixes in roots:
        try:
            methods = [e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            continue
        for method in methods:
            for rel in deleted:
                for suffix in suffixes:
                    try:
                        os.unlink(result_path(root, method, rel, suffix))
                        removed += 1
                    except OSError:
                        pass
    return removed


# --------------------------------------------------------------------------- process identity

def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start_ticks": _start_ticks(pid)}


def is_dead(who: dict) -> bool:
    """True only when ``who`` was a process of this host that is provably gone."""
    if not who or who.get("host") != socket.gethostname():
        return False
    if who.get("boot_id") and _boot_id() and who["boot_id"] != _boot_id():
        return True  # rebooted since
    pid = who.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    ticks = who.get("start_ticks")
    return ticks is not None and _start_ticks(pid) not in (None, ticks)


# --------------------------------------------------------------------------- runs

def state_dir(results_dir: str) -> Path:
    return Path(results_dir) / STATE_DIR


def load_history(results_dir: str) -> list[dict]:
    """The runs of ``{results_dir}/history.jsonl``, oldest first; unreadable lines skipped."""
    try:
        lines = (Path(results_dir) / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    runs = []
    for line in lines:
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict):
            runs.append(run)
    return runs


def append_history(results_dir: str, run: dict) -> None:
    """Append one line; the file is rewritten atomically, so it never holds half a line."""
    path = Path(results_dir) / HISTORY_FILE
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    atomic_write_bytes(path, old + json.dumps(run, ensure_ascii=False).encode("utf-8") + b"\n")


def _remove_temporaries(results_dir: str) -> int:
    """Remove ``.name.XXXX.tmp`` files (cq.imageio.atomic_path's) left by a killed run."""
    removed = 0
    for folder, dirs, files in os.walk(results_dir):
        dirs[:] = [d for d in dirs if d != STATE_DIR]
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def begin(results_dir: str, input_dir: str, images: list[str], methods: list[str], *,
          prune_deleted: bool = False, other_dirs=(), settings: dict | None = None,
          skipped=()) -> dict:
    """Start a run: close an interrupted one, snapshot and compare the images, maybe prune.

    ``skipped``: what discovery left out (looping or escaping symlinks, odd names), one line
    each, kept in the run's line so that the report can list it.
    """
    state = state_dir(results_dir)
    state.mkdir(parents=True, exist_ok=True)
    interrupted = _read_json(state / CURRENT)
    if isinstance(interrupted, dict):
        interrupted.update(status="interrupted", end=None)
        interrupted.pop("owner", None)
        append_history(results_dir, interrupted)
        n = _remove_temporaries(results_dir)
        log.warning("cq: the run started %s did not finish; %d temporary files removed",
                    interrupted.get("start"), n)
    previous = _read_json(state / SNAPSHOT, {}) or {}
    snapshot = scan(input_dir, images, previous)
    counts, deleted = compare(previous, snapshot)
    pruned = 0
    if deleted and prune_deleted:
        if images:
            pruned = prune(deleted, results_dir, other_dirs)
        else:
            log.warning("cq: no image found, so nothing is pruned (is the input folder mounted?)")
    run = {"start": _iso(_now()), "end": None, "status": "running", "counts": counts,
           "methods": list(methods), "images": len(images), "pruned": pruned,
           "deleted_images": deleted[:100], "skipped": list(skipped)[:100], "settings": settings or {}, "owner": owner()}
    _write_json(state / NEXT_SNAPSHOT, snapshot)
    _write_json(state / CURRENT, run)
    return run


def _created_this_run(record: dict, start: datetime | None) -> bool:
    created = _parse(record.get("created"))
    return start is not None and created is not None and created >= start


def tally(records, start: datetime | None, methods=()) -> dict:
    """failed, failed_images and time per method (0 for each of ``methods`` that did nothing)
    of the records written since ``start``."""
    times, failed, failed_images = dict.fromkeys(methods, 0.0), 0, set()
    for record in records:
        if not isinstance(record, dict) or not _created_this_run(record, start):
            continue
        method = str(record.get("method"))
        try:
            times[method] = times.get(method, 0.0) + float(record.get("wall_time_s") or 0.0)
        except (TypeError, ValueError):
            pass
        if record.get("status") != "ok":
            failed += 1
            failed_images.add(str((record.get("image") or {}).get("path")))
    return {"failed": failed, "failed_images": len(failed_images), "time_per_method": times}


def _records_since(results_dir: str, images, methods, start_ts: float):
    """(records written since ``start_ts``, how many are missing), reading only those files."""
    records, missing = [], 0
    for method in methods:
        for rel in images:
            path = result_path(results_dir, method, rel, ".json")
            try:
                if os.stat(path).st_mtime < start_ts - 1:
                    continue
                records.append(json.loads(Path(path).read_text(encoding="utf-8")))
            except FileNotFoundError:
                missing += 1
            except (OSError, ValueError):
                continue
    return records, missing


def finish(results_dir: str, images, methods, status: str = "ok") -> dict | None:
    """End the run begun by :func:`begin`: append its history line; None when none was begun."""
    state = state_dir(results_dir)
    run = _read_json(state / CURRENT)
    if not isinstance(run, dict):
        return None
    start = _parse(run.get("start"))
    records, missing = _records_since(results_dir, images, methods, start.timestamp() if start else 0.0)
    done = tally(records, start, run.get("methods") or ())
    counts = {**run.get("counts", {}), "failed": done["failed"], "missing": missing}
    run["counts"] = {key: counts.get(key, 0) for key in COUNT_KEYS}
    run.update(end=_iso(_now()), status=status, failed_images=done["failed_images"],
               time_per_method={m: round(t, 3) for m, t in done["time_per_method"].items()})
    run.pop("owner", None)
    append_history(results_dir, run)
    try:
        os.replace(state / NEXT_SNAPSHOT, state / SNAPSHOT)
    except FileNotFoundError:
        pass
    (state / CURRENT).unlink(missing_ok=True)
    return run


def live_run(results_dir: str, records: list[dict]) -> dict | None:
    """The run in progress (``current.json``), completed from ``records``: for the report that
    this run builds, before :func:`finish` writes the line."""
    run = _read_json(state_dir(results_dir) / CURRENT)
    if not isinstance(run, dict):
        return None
    done = tally(records, _parse(run.get("start")), run.get("methods") or ())
    run = {k: v for k, v in run.items() if k != "owner"}
    run["counts"] = {**run.get("counts", {}), "failed": done["failed"]}
    run.update(end=_iso(_now()), status="running (this report)",
               time_per_method={m: round(t, 3) for m, t in done["time_per_method"].items()})
    return run


def stale(results_dir: str) -> bool:
    """True when a run is recorded in progress and its process is provably gone."""
    run = _read_json(state_dir(results_dir) / CURRENT)
    return isinstance(run, dict) and is_dead(run.get("owner") or {})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "stale":
        dead = stale(argv[1])
        print(f"cq: {'the last run died; its lock is stale' if dead else 'no dead run recorded'}",
              file=sys.stderr)
        return 0 if dead else 1
    print("usage: python -m cq.history stale RESULTS_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
