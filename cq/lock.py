"""One lock per results folder, owned by cq: at most one run works on a ``results_dir``.

The lock is ``{results_dir}/.history/lock``, a file that is never deleted or replaced, held
with ``flock(2)`` by the run for its whole life. The kernel drops a ``flock`` when its last
holder exits, however it exits (``kill -9``, out of memory, power cut: after a reboot no lock
survives), so a dead owner never blocks the next night and there is no stale lock to clear:
taking it over is automatic and needs no guess. The working directory plays no part, so two
runs on one results folder from different ``--directory`` are refused alike.

The file's content names the holder (host, pid, boot id, process start time, start time and
a random token), written once the lock is held. A second run is refused with one line naming
it. A child (Snakemake, started by ``cq nightly``) proves it runs under its parent's lock by
the token in ``CQ_LOCK_TOKEN``: the lock is held, and by the holder of that token.

Not for a results folder on a network file system whose clients may hold locks for a crashed
peer: Linux maps ``flock`` to NFS byte-range locks, which the server frees when its lease
ends, not at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = ".history/lock"
TOKEN_ENV = "CQ_LOCK_TOKEN"


class LockedError(RuntimeError):
    """Another live run holds the lock; the message names it in one line."""


def lock_path(results_dir: str | os.PathLike) -> Path:
    return Path(results_dir) / LOCK_NAME


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells a reused pid apart)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def identity(token: str | None = None) -> dict:
    """Who holds the lock: host, pid, boot id, process start ticks, start time, token."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "boot_id": boot_id(),
            "start_ticks": start_ticks(pid), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "token": token or secrets.token_hex(8)}


def describe(owner: dict | None) -> str:
    if not owner:
        return "another run (its details are not readable yet)"
    return (f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}")


@dataclass
class RunLock:
    """A held lock; :meth:`release` (or process exit) frees it."""

    path: Path
    fd: int
    owner: dict

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def read_owner(results_dir) -> dict | None:
    try:
        owner = json.loads(lock_path(results_dir).read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) else None
    except (OSError, ValueError):
        return None


def _open(results_dir) -> tuple[Path, int]:
    path = lock_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def acquire(results_dir: str | os.PathLike, token: str | None = None) -> RunLock:
    """Take the lock of ``results_dir`` or raise :class:`LockedError` naming its live holder.

    The holder's identity is written in place (the inode never changes, so a waiting
    ``flock`` is never on a file that was replaced); a reader may see it half-written, which
    :func:`read_owner` treats as "not readable yet".
    """
    path, fd = _open(results_dir)
    if not _try_flock(fd):
        os.close(fd)
        raise LockedError(f"cq: {os.fspath(results_dir)} is in use by {describe(read_owner(results_dir))}; "
                          f"not starting a second run")
    owner = identity(token)
    data = json.dumps(owner).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data + b"\n", 0)
    return RunLock(path, fd, owner)


def held_by_parent(results_dir: str | os.PathLike) -> bool:
    """True when ``CQ_LOCK_TOKEN`` names the live holder of this folder's lock: this process
    runs under the lock that its parent (``cq nightly``) took."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return False
    owner = read_owner(results_dir)
    if not owner or owner.get("token") != token:
        return False
    path, fd = _open(results_dir)
    try:
        if _try_flock(fd):  # nobody holds it: the parent is gone
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True
    finally:
        os.close(fd)


_HELD: RunLock | None = None


def ensure(results_dir: str | os.PathLike) -> RunLock | None:
    """In a workflow's main process: go on under the parent's lock, or take it for the rest of
    this process's life; raise :class:`LockedError` when another run holds it. Returns the
    lock taken here, None when the parent holds it."""
    global _HELD
    if held_by_parent(results_dir):
        return None
    if _HELD is None or _HELD.fd < 0:
        _HELD = acquire(results_dir)
    return _HELD
