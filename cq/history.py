"""Run history: what each run of the workflow found and did, one JSON line per run.

The workflow calls :func:`begin` when a run starts (Snakemake's ``onstart``, in the main
process, once it holds cq's lock, cq/lock.py) and :func:`finish` when it ends (through
cq.outcome). No Snakemake import here.

- ``begin`` compares the images found now (relative path, size, mtime, ctime, inode, and a
  sha256 for new or touched files) with the snapshot of the last finished run, giving the
  counts ``new``, ``changed`` (other content), ``unchanged`` (a touch alone is unchanged) and
  ``deleted``; optionally prunes the results of deleted images that are provably gone; and
  writes ``.history/current.json``, the run in progress, padded so that its final line fits
  there even on a full disk.
- ``finish`` adds ``failed`` (error records written by this run), ``missing`` (records still
  absent, e.g. a job that died) and the time per method (the sum of ``wall_time_s`` of the
  records written by this run). "Written by this run" is an mtime at or after the run's start
  mark, ``.history/started``, touched by ``begin`` (:func:`mark_start`): the file system's
  clock on both sides, no slack, no rounding, appends the line to ``{results_dir}/history.jsonl``
  (rewritten atomically: never a half line) and makes the new snapshot the reference. When
  the disk is full, the line is written in place into ``current.json`` instead.
- The next ``begin`` (under the lock, so the previous run is over) appends what it finds in
  ``current.json``: a run that ended but could not append its line, as it was; a run that
  was killed (SIGKILL, power cut), with status ``interrupted``; and removes the temporary
  files of its interrupted writes (``.name.XXXX.tmp``; never read as results), as ``finish``
  does too, ``.history/`` included.
- Each run has an id (the token of its lock, cq/lock.py), kept in its line: ``cq nightly``
  tells its own run from an earlier one by id (:func:`ended`), never by time.
- Every run's line is written before its report is built, so the report (which shows
  finished runs only) already shows the run that built it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path

from cq import lock
from cq.discover import result_path
from cq.fsutil import atomic_write_bytes

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
STATE_DIR = ".history"
SNAPSHOT = "snapshot.json"
NEXT_SNAPSHOT = "snapshot.next.json"
CURRENT = "current.json"
STARTED = "started"  # touched when a run begins: its mtime tells this run's files from older ones
RESERVE = 64 * 1024  # bytes kept in current.json for the final line
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
    """``{relpath: {"size", "mtime_ns", "ctime_ns", "ino", "sha256"}}`` of ``images``; a file
    whose size, mtime, ctime and inode match ``previous`` keeps its recorded hash (ctime
    cannot be set back, so a ``touch -r`` or ``cp -p`` of other content is hashed), any other
    is hashed (an unreadable one: None)."""
    snap = {}
    for rel in images:
        path = os.path.join(input_dir, rel)
        try:
            st = os.stat(path)
            now = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "ino": st.st_ino}
        except OSError:
            now = {"size": None, "mtime_ns": None, "ctime_ns": None, "ino": None}
        old = previous.get(rel)
        if old and now["size"] is not None and all(old.get(k) == v for k, v in now.items()):
            sha = old.get("sha256")
        else:
            sha = _sha256(path) if now["size"] is not None else None
        snap[rel] = {**now, "sha256": sha}
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


def provably_gone(input_dir: str, rel: str) -> bool:
    """True only when ``rel`` is absent (``ENOENT``, not a permission error) and the nearest
    folder above it that exists can be listed: an unreadable or unmounted folder hides its
    files, it does not delete them."""
    path = os.path.join(input_dir, rel)
    try:
        os.lstat(path)
        return False
    except FileNotFoundError:
        pass
    except OSError:
        return False
    folder = os.path.dirname(path)
    while folder and not os.path.lexists(folder):
        if os.path.normpath(folder) == os.path.normpath(input_dir):
            return False  # the input folder itself is gone: not mounted
        folder = os.path.dirname(folder)
    try:
        with os.scandir(folder or "."):
            return True
    except OSError:
        return False


def prune(deleted: list[str], results_dir: str, other_dirs=(), input_dir: str | None = None) -> int:
    """Remove the results (every method's PNG and JSON) and the logs and benchmarks of deleted
    images that are provably gone (see :func:`provably_gone`); return how many files went."""
    if input_dir is not None:
        deleted = [rel for rel in deleted if provably_gone(input_dir, rel)]
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


def append_history(results_dir: str, *runs: dict) -> None:
    """Append lines; the file is rewritten atomically, so it never holds half a line."""
    path = Path(results_dir) / HISTORY_FILE
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    new = b"".join(json.dumps(run, ensure_ascii=False).encode("utf-8") + b"\n" for run in runs)
    atomic_write_bytes(path, old + new)


def _write_current(state: Path, run: dict) -> None:
    """``current.json``: the run in progress ({} when none), padded by :data:`RESERVE` bytes
    so that a later write fits in place. Written atomically; on a full disk, in place."""
    data = json.dumps(run, ensure_ascii=False).encode()
    try:
        atomic_write_bytes(state / CURRENT, data + b" " * RESERVE)
    except OSError as e:
        if not (state / CURRENT).exists():
            raise
        log.warning("cq: %s written in place (%s)", state / CURRENT, e.strerror or e)
        _overwrite_in_place(state / CURRENT, run)


def _remove_temporaries(results_dir: str) -> int:
    """Remove ``.name.XXXX.tmp`` files (cq.fsutil.atomic_path's) left by a killed run, in
    ``.history/`` too (a kill while ``outcome.json`` or ``current.json`` was being written).
    Called under the lock with no job running: no such file can belong to a live writer."""
    removed = 0
    for folder, _, files in os.walk(results_dir):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(folder, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def mark_start(results_dir: str) -> int:
    """Touch ``.history/started`` and return its mtime (ns): what this run writes later has an
    mtime at least this. The file system's own clock, with no slack and no rounding, so which
    records are this run's never depends on how long a start took (nor on the clock of the
    host that runs the jobs). Where the mark cannot be touched, this host's clock now."""
    path = state_dir(results_dir) / STARTED
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        os.utime(path)  # an empty file: no data block, so a full disk still takes it
        return os.stat(path).st_mtime_ns
    except OSError as e:
        log.warning("cq: %s not touched (%s): this host's clock marks the run's start", path, e.strerror or e)
        return time.time_ns()


def begin(results_dir: str, input_dir: str, images: list[str], methods: list[str], *,
          prune_deleted: bool = False, other_dirs=(), settings: dict | None = None,
          skipped=(), run_id: str | None = None) -> dict:
    """Start a run: close an interrupted one, snapshot and compare the images, maybe prune.

    ``skipped``: what discovery left out (looping or escaping symlinks, odd names), one line
    each, kept in the run's line so that the report can list it. ``run_id``: the run's id in
    its line (default: the token of the lock it runs under, cq.lock.run_id), so that a caller
    finds its own run by id (:func:`ended`), never by time.
    """
    state = state_dir(results_dir)
    state.mkdir(parents=True, exist_ok=True)
    pending = []  # history lines not yet appended: a full disk may keep them for later
    previous_run = _read_json(state / CURRENT)
    if isinstance(previous_run, dict) and previous_run:  # we hold the lock: that run is over
        pending = list(previous_run.pop("pending", []))
        if previous_run.get("end"):  # it ended, but its line did not fit on a full disk
            previous_run["note"] = "history line written by the next run: " + str(previous_run.get("note"))
        else:
            previous_run.update(status="interrupted", end=None)
            log.warning("cq: the run started %s did not finish", previous_run.get("start"))
        pending.append(previous_run)
        _promote_snapshot(state, previous_run)
        n = _remove_temporaries(results_dir)
        if n:
            log.warning("cq: %d temporary files of an interrupted write removed", n)
    if pending:
        try:
            append_history(results_dir, *pending)
            pending = []
        except OSError as e:
            log.warning("cq: history lines kept for later (%s)", e.strerror or e)
    previous = _read_json(state / SNAPSHOT, {}) or {}
    snapshot = scan(input_dir, images, previous)
    counts, deleted = compare(previous, snapshot)
    pruned = 0
    if deleted and prune_deleted:
        if images:
            pruned = prune(deleted, results_dir, other_dirs, input_dir=input_dir)
        else:
            log.warning("cq: no image found, so nothing is pruned (is the input folder mounted?)")
    run = {"id": run_id or lock.run_id() or secrets.token_hex(8), "start": _iso(_now()),
           "since_ns": mark_start(results_dir), "end": None, "status": "running", "counts": counts,
           "methods": list(methods), "images": len(images), "pruned": pruned,
           "deleted_images": deleted[:100], "skipped": list(skipped)[:100], "settings": settings or {}}
    if pending:
        run["pending"] = pending[-20:]
    try:
        _write_json(state / NEXT_SNAPSHOT, snapshot)
    except OSError as e:  # the reference snapshot stays the previous one
        log.warning("cq: snapshot not written (%s)", e.strerror or e)
    # Padded: the space for the run's final line is taken now, so finish() can still leave it
    # here, in place, when the disk is full by then (see finish).
    _write_current(state, run)
    return run


def _promote_snapshot(state: Path, run: dict) -> None:
    """A run that finished (its line late) made its snapshot the reference; an interrupted
    one did not."""
    if run.get("end"):
        try:
            os.replace(state / NEXT_SNAPSHOT, state / SNAPSHOT)
        except FileNotFoundError:
            pass


def in_progress(results_dir: str) -> dict | None:
    """The run recorded in progress (``current.json``), or None."""
    run = _read_json(state_dir(results_dir) / CURRENT)
    return run if isinstance(run, dict) and run else None


def last_images(results_dir: str) -> int | None:
    """How many images the last run that ended found (its line waiting in ``current.json``,
    else the last line of the history that is not ``interrupted``); None before any."""
    run = in_progress(results_dir)
    if run and run.get("end"):
        return run.get("images")
    try:
        with open(Path(results_dir) / HISTORY_FILE, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - RESERVE))
            tail = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(tail):
        try:
            run = json.loads(line)
        except ValueError:
            continue
        if isinstance(run, dict) and run.get("status") != "interrupted" and isinstance(run.get("images"), int):
            return run["images"]
    return None


class ShrunkError(RuntimeError):
    """The input holds far fewer images than the last night found; the message is one line."""


def check_shrink(results_dir: str, input_dir: str, found: int, share: float) -> None:
    """Refuse a night over an input that holds fewer than ``share`` of the images the last
    night that ended found (none at all included): an unmounted share or a folder emptied by
    mistake, which would replace the report with a near-empty one. ``share`` 0: never."""
    last = last_images(results_dir)
    if share > 0 and last and found < share * last:
        raise ShrunkError(f"cq: error: input_dir {input_dir!r} holds {found} images, the last night found "
                          f"{last}: is it mounted? Nothing done; run with --accept-fewer (or config "
                          f"min_image_share=0) if they are gone for good")


def ended(results_dir: str, run_id: str | None) -> bool:
    """True when the run ``run_id`` ended but its line waits in ``current.json`` (the disk
    was full): matched by id, so a run never takes an earlier run's waiting line for its own."""
    run = in_progress(results_dir)
    return bool(run_id and run and run.get("id") == run_id and run.get("end"))


def tally(records, methods=()) -> dict:
    """failed, failed_images and time per method (0 for each of ``methods`` that did nothing)
    of this run's records."""
    times, failed, failed_images = dict.fromkeys(methods, 0.0), 0, set()
    for record in records:
        if not isinstance(record, dict):
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


def written_this_run(path: str, since_ns: int) -> bool:
    """Whether the file at ``path`` was written since the run's start mark (False if absent)."""
    try:
        return os.stat(path).st_mtime_ns >= since_ns
    except OSError:
        return False


def _records_since(results_dir: str, images, methods, since_ns: int):
    """(the records written since ``since_ns``, how many are missing), reading only those."""
    records, missing = [], 0
    for method in methods:
        for rel in images:
            path = result_path(results_dir, method, rel, ".json")
            if not os.path.lexists(path):
                missing += 1
            elif written_this_run(path, since_ns):
                try:
                    records.append(json.loads(Path(path).read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    continue
    return records, missing


def since_ns(run: dict) -> int:
    """The run's start mark (:func:`mark_start`); a line of an older version has its start time."""
    if isinstance(run.get("since_ns"), int):
        return run["since_ns"]
    start = _parse(run.get("start"))
    return int(start.timestamp() * 1e9) if start else 0


def finish(results_dir: str, images, methods, status: str = "ok") -> dict | None:
    """End the run begun by :func:`begin`: append its history line; None when none was begun."""
    state = state_dir(results_dir)
    run = _read_json(state / CURRENT)
    if not isinstance(run, dict) or not run:
        return None
    pending = run.pop("pending", [])
    _remove_temporaries(results_dir)  # every job is over: what a killed job left is garbage
    records, missing = _records_since(results_dir, images, methods, since_ns(run))
    done = tally(records, run.get("methods") or ())
    counts = {**run.get("counts", {}), "failed": done["failed"], "missing": missing}
    run["counts"] = {key: counts.get(key, 0) for key in COUNT_KEYS}
    run.update(end=_iso(_now()), status=status, failed_images=done["failed_images"],
               time_per_method={m: round(t, 3) for m, t in done["time_per_method"].items()})
    try:
        append_history(results_dir, *pending, run)
    except OSError as e:  # a full disk: keep the lines where their space is reserved
        run["note"] = f"could not append at the end of the run: {e.strerror or e}"
        _overwrite_in_place(state / CURRENT, {**run, "pending": pending} if pending else run)
        log.warning("cq: history line kept in %s (%s); the next run appends it", state / CURRENT, e)
        return run
    try:
        os.replace(state / NEXT_SNAPSHOT, state / SNAPSHOT)
    except FileNotFoundError:
        pass
    try:
        _write_current(state, {})  # kept, padded: the next run's line has its space already
    except OSError:
        (state / CURRENT).unlink(missing_ok=True)
    return run


def _overwrite_in_place(path: Path, run: dict) -> None:
    """Write ``run`` over the padded ``current.json`` without allocating: same file, same size."""
    data = json.dumps(run, ensure_ascii=False).encode()
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        if len(data) > size:
            run = {k: v for k, v in run.items() if k not in ("deleted_images", "skipped", "settings")}
            data = json.dumps(run, ensure_ascii=False).encode()[:size]
        os.pwrite(fd, data + b" " * (size - len(data)), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
