"""The record decides whether a result is up to date, in every mode and on every night.

A result is *current* when its record exists, was made by the same job (method, method
version, parameters, k, weights, read options, scoring version: :func:`job_fingerprint`)
from the same image content, is not a transient failure, and (when ok) has its PNG.

The content is compared cheaply first: the record keeps the image's size, mtime, ctime, inode
and device as stat-ed *before* its bytes were read (:func:`read_source`), and the sha256 of
exactly those bytes. Equal stat: same content, since ``touch -r`` and ``cp -p`` can set mtime
back but not ctime. Other stat: the file is hashed and compared with the record's hash, so
a touch alone costs a hash, not a rerun. A file that changed while its job read it has a
stat newer than the recorded one and a hash that differs: it is redone next time. A stat
taken within :data:`RACY_NS` of the file's last change is not trusted (a coarse-timestamp
file system could hide a second change in the same tick): such an image is hashed next time.

Snakemake's own triggers (mtime, checksums in ``.snakemake``) remain a first filter only:
:func:`stale_outputs` tells the workflow which outputs to force, whatever Snakemake thinks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import asdict

STAT_KEYS = ("size", "mtime_ns", "ctime_ns", "ino", "dev")
RACY_NS = 2_000_000_000

# Failures that say nothing about the image: retried on the next night (see is_transient).
TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EROFS,
                              errno.ESTALE, errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT})


def stat_of(st: os.stat_result, now_ns: int | None = None) -> dict:
    """The fields of ``st`` that identify a file's content, and whether they can be trusted."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    stat = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "ino": st.st_ino, "dev": st.st_dev}
    if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        stat["racy"] = True
    return stat


def read_source(path: str | os.PathLike) -> tuple[bytes, dict, str]:
    """(bytes, stat before reading, sha256 of those bytes): a job reads its image once, so the
    recorded hash is that of what it quantized, whatever happens to the file meanwhile."""
    with open(path, "rb") as f:
        stat = stat_of(os.fstat(f.fileno()))
        data = f.read()
    return data, stat, hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    from cq.fsutil import file_sha256 as sha

    return sha(path)


# --------------------------------------------------------------------------- the job

def spec_fingerprint(spec: dict) -> str:
    """A hash of a job's full spec (cq.methods.job_spec, ``Job.to_spec``: method, label, code
    version, parameters with defaults, k, weights, read options, scoring version); numbers
    canonical, so that weights 2 and 2.0 are one job. Needs no numpy: the workflow's main
    process computes it for every column at every start."""
    spec = {**spec, "k": int(spec["k"]), "weights": {k: float(v) for k, v in spec["weights"].items()}}
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def job_fingerprint(job) -> str:
    """:func:`spec_fingerprint` of a ``cq.pipeline.Job`` (an unknown method: its record is an
    error, fingerprinted with version "unknown")."""
    from cq.methods import UnknownMethodError

    try:
        spec = job.to_spec()
    except UnknownMethodError:
        read = asdict(job.read)
        read["background"] = list(read["background"]) if read.get("background") else None
        spec = {"method": job.method, "name": job.label, "version": "unknown", "params": dict(job.params),
                "k": job.k, "weights": job.weights.as_dict(), "read": read, "scoring_version": None}
    return spec_fingerprint(spec)


# --------------------------------------------------------------------------- the record

def is_transient(record: dict) -> bool:
    return record.get("status") == "error" and bool(record.get("transient"))


def load_record(path: str | os.PathLike) -> dict | None:
    """The record at ``path`` as JSON (not schema-checked: only its keys are compared)."""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        return record if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def same_content(record: dict, image_path: str | os.PathLike) -> tuple[bool, dict | None]:
    """(whether the image still holds the recorded content, its stat now when a hash was
    needed and matched: the caller may store it so that the next check is cheap again)."""
    image = record.get("image") or {}
    recorded = image.get("stat") or {}
    try:
        now = stat_of(os.stat(image_path))
    except OSError:
        return False, None
    same_stat = bool(recorded) and all(recorded.get(k) == now[k] for k in STAT_KEYS)
    if same_stat and not recorded.get("racy"):
        return True, None
    sha = image.get("sha256")
    if not sha or recorded.get("size") not in (None, now["size"]):
        return False, None
    try:
        if file_sha256(image_path) != sha:
            return False, None
    except OSError:
        return False, None
    return True, (None if same_stat else now)  # a racy stat stays: the record is not rewritten


def check(record: dict | None, image_path, png_path, fingerprint: str) -> tuple[bool, str, dict | None]:
    """(current?, why not, refreshed stat or None) of one result."""
    if record is None:
        return False, "no record", None
    if record.get("job_fingerprint") != fingerprint:
        return False, "the job changed", None
    if is_transient(record):
        return False, f"transient failure retried: {record.get('error')}", None
    if record.get("status") == "ok" and not os.path.isfile(png_path):
        return False, "its PNG is missing", None
    same, refreshed = same_content(record, image_path)
    if not same:
        return False, "the image changed", None
    return True, "", refreshed


def refresh_stat(json_path, record: dict, stat: dict) -> None:
    """Store a new stat (same content, after a touch) in the record, atomically."""
    from cq.record import write_record

    record = {**record, "image": {**record["image"], "stat": stat}}
    write_record(json_path, record)


def stale_outputs(pairs, *, refresh: bool = False) -> list[tuple[str, str, str]]:
    """For ``pairs`` of (image path, png path, json path, fingerprint), the json paths whose
    result is not current, with the reason: [(json path, image path, reason)]. With
    ``refresh`` (under the run's lock only), a record whose image was merely touched gets
    the new stat, so that the next night need not hash it again."""
    stale = []
    for image_path, png_path, json_path, fingerprint in pairs:
        record = load_record(json_path)
        current, why, refreshed = check(record, image_path, png_path, fingerprint)
        if not current:
            stale.append((json_path, image_path, why))
        elif refreshed is not None and refresh:
            try:
                refresh_stat(json_path, record, refreshed)
            except (OSError, ValueError):
                pass  # only a cache: the next night hashes again
    return stale
