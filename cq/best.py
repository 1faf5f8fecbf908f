"""The deliverable: ``{results_dir}/best/{image}.png`` and ``.json``, the winning method's output
for each image, kept current as results change (most users want one image back, not six).

The winner is the ok result with the lowest score among the configured methods; a tie goes
to the first method in the config's order, and the copy's record lists the tied methods. An
image with no ok result has no ``best`` entry (a stale one is removed).

Cheap on a night with nothing new: ``.history/index.json`` keeps, for every record, its
modification time, status and score, so only records that changed are read again, and a
``best`` entry is rewritten only when its winner's record changed.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from cq.discover import result_path
from cq.freshness import load_record
from cq.fsutil import atomic_write_bytes

BEST = "best"
INDEX = ".history/index.json"


def _version(path: str) -> list | None:
    """What tells one version of a record file from another: [mtime_ns, size, inode]."""
    try:
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size, st.st_ino]
    except OSError:
        return None


def _load_index(results_dir: str) -> dict:
    try:
        index = json.loads((Path(results_dir) / INDEX).read_text(encoding="utf-8"))
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def _summarize(json_path: str, version: list) -> list:
    """[version, status, score, error, valid, created] of one record (created: seconds since
    the epoch, or None), checked against the schema once per version, so that the report need
    not check an unchanged record again."""
    from cq.record import RecordError, validate

    record = load_record(json_path) or {}
    try:
        valid = bool(record) and validate(record, json_path) is record
    except RecordError:
        valid = False
    score = (record.get("scores") or {}).get("score")
    created = _epoch(record.get("created"))
    return [version, record.get("status", "error"), score, record.get("error"), valid, created]


def _epoch(stamp) -> float | None:
    try:
        t = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def refresh_index(results_dir: str, images, methods, old: dict | None = None) -> dict:
    """{image: {method: [version, status, score or None, error or None, valid]}} for every
    record present, reading only the records that changed since the stored index."""
    old = (_load_index(results_dir) if old is None else old).get("records") or {}
    index = {}
    for image in images:
        entry, before = {}, old.get(image) or {}
        for method in methods:
            json_path = result_path(results_dir, method, image, ".json")
            version = _version(json_path)
            if version is None:
                continue
            known = before.get(method)
            same = known and known[0] == version and len(known) > 5  # shorter: indexed before 'created'
            entry[method] = known if same else _summarize(json_path, version)
        index[image] = entry
    return index


def is_valid(index: dict, image: str, method: str, json_path: str) -> bool:
    """True when the record at ``json_path`` is the version the index checked and found valid."""
    known = (index.get(image) or {}).get(method)
    return bool(known and known[4] and known[0] == _version(json_path))


def winner(entry: dict, methods) -> tuple[str | None, list[str]]:
    """(best method, methods tied with it) of one image's index entry."""
    scored = [(v[2], m) for m in methods if (v := entry.get(m)) and v[1] == "ok" and v[2] is not None]
    if not scored:
        return None, []
    best = min(s for s, _ in scored)
    tied = [m for s, m in scored if s == best]
    return tied[0], tied


def _copy(results_dir: str, image: str, method: str, mark: dict) -> bool:
    record = load_record(result_path(results_dir, method, image, ".json"))
    try:
        png = Path(result_path(results_dir, method, image, ".png")).read_bytes()
    except OSError:
        return False
    if not record or record.get("status") != "ok":
        return False
    atomic_write_bytes(result_path(results_dir, BEST, image, ".png"), png)
    atomic_write_bytes(result_path(results_dir, BEST, image, ".json"),
                       (json.dumps({**record, "best_of": mark}, indent=1, ensure_ascii=False) + "\n").encode())
    return True


def _remove(results_dir: str, image: str) -> bool:
    removed = False
    for suffix in (".json", ".png"):  # the record first: a png alone is never listed
        try:
            os.unlink(result_path(results_dir, BEST, image, suffix))
            removed = True
        except FileNotFoundError:
            pass
    return removed


def update_best(results_dir: str, images, methods) -> tuple[int, dict]:
    """Bring ``best/`` up to date; (entries written or removed, the record index)."""
    stored = _load_index(results_dir)
    index = refresh_index(results_dir, images, methods, stored)
    marks, old_marks, written = {}, stored.get("best") or {}, 0
    for image in images:
        method, tied = winner(index.get(image) or {}, methods)
        if method is None:
            written += _remove(results_dir, image) if image in old_marks else 0
            continue
        mark = {"method": method, "tied": tied, "record_version": index[image][method][0]}
        if old_marks.get(image) == mark and os.path.exists(result_path(results_dir, BEST, image, ".png")):
            marks[image] = mark
        elif _copy(results_dir, image, method, mark):
            marks[image], written = mark, written + 1
    new = {"records": index, "best": marks}
    if new != stored:
        atomic_write_bytes(Path(results_dir) / INDEX, json.dumps(new).encode())
    return written, index
