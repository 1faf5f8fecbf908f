"""One lock per results folder, owned by cq: at most one run works on a ``results_dir``.

The lock is a ``flock(2)`` on the results folder itself, held by the run for its whole life.
A folder cannot be deleted by mistake while it holds results, so deleting or replacing a file
(``rm .history/lock``) cannot let a second run in beside a live one; after taking the lock,
the run checks that the path still names the folder it locked (one renamed away meanwhile is
not the results folder any more) and tries again if not. The kernel drops a ``flock`` when
its last holder exits, however it exits (``kill -9``, out of memory, power cut: after a
reboot no lock survives), so a dead owner never blocks the next night and there is no stale
lock to clear. The working directory plays no part, so two runs on one results folder from
different ``--directory`` are refused alike.

``{results_dir}/.history/lock`` names the holder (host, pid, boot id, process start time,
start time and a random token that is also the run's id), written in place once the lock is
held. It only informs: a second run is refused with one line naming it, or naming
"another run" when that file was deleted. A child (Snakemake, started by ``cq nightly``)
proves it runs under its parent's lock by the inherited descriptor named in ``CQ_LOCK_FD``
(it holds the very lock), or, without it, by the token in ``CQ_LOCK_TOKEN``.

A results folder that cannot hold the lock (read-only, a dangling symlink, a file, a
``.history/lock`` that is a folder) raises :class:`LockError` with one line naming it.

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
FD_ENV = "CQ_LOCK_FD"
RECORD_BYTES = 512  # the holder's record, padded: rewritten in place, never grown
_TRIES = 5


class LockedError(RuntimeError):
    """Another live run holds the lock; the message names it in one line."""


class LockError(RuntimeError):
    """The results folder cannot hold a lock (read-only, not a folder...); one line."""


def lock_path(results_dir: str | os.PathLike) -> Path:
    """The holder's record (not the lock itself: that is the results folder's flock)."""
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
        return "another run (its details are not readable)"
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

    def child_env(self) -> dict[str, str]:
        """What a child started with ``pass_fds=(self.fd,)`` needs to know it runs under
        this lock (see :func:`held_by_parent`)."""
        return {TOKEN_ENV: self.owner["token"], FD_ENV: str(self.fd)}

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


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _open(results_dir) -> int:
    """A descriptor of the results folder (created if missing), or :class:`LockError`."""
    folder = os.fspath(results_dir)
    if os.path.lexists(folder) and not os.path.isdir(folder):
        what = "a symlink to a missing folder" if os.path.islink(folder) else "not a folder"
        raise LockError(f"cq: error: results_dir {folder!r} is {what}")
    try:
        os.makedirs(folder, exist_ok=True)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise LockError(f"cq: error: results_dir {folder!r} cannot be used: {_why(e)}") from None


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _names(results_dir, fd: int) -> bool:
    """True when the path ``results_dir`` still names the folder open as ``fd``."""
    try:
        now, held = os.stat(results_dir), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)


def _write_owner(results_dir, owner: dict) -> None:
    """Write the holder's record in place, padded to :data:`RECORD_BYTES`: after the first
    night the file's space is allocated, so a full disk cannot stop a night here (a reader
    may see it half-written, which :func:`read_owner` takes as "not readable"). A record
    that cannot be written at all is emptied: better no details than another run's."""
    path = lock_path(results_dir)
    if path.is_dir():
        raise LockError(f"cq: error: {os.fspath(path)} is a folder, where cq keeps its lock record; remove it")
    data = json.dumps(owner).encode().ljust(RECORD_BYTES - 1) + b"\n"
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        raise LockError(f"cq: error: results_dir {os.fspath(results_dir)!r} cannot be written: {_why(e)}") from None
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise LockError(f"cq: error: {os.fspath(path)} cannot be written: {_why(e)}") from None
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def acquire(results_dir: str | os.PathLike, token: str | None = None) -> RunLock:
    """Take the lock of ``results_dir`` or raise :class:`LockedError` naming its live holder
    (:class:`LockError` when the folder cannot hold one). Then writes the holder's record."""
    for _ in range(_TRIES):
        fd = _open(results_dir)
        if not _try_flock(fd):
            os.close(fd)
            raise LockedError(f"cq: {os.fspath(results_dir)} is in use by {describe(read_owner(results_dir))}; "
                              f"not starting a second run")
        if _names(results_dir, fd):
            break
        os.close(fd)  # the folder was replaced between open and flock: lock the new one
    else:
        raise LockError(f"cq: error: results_dir {os.fspath(results_dir)!r} keeps being replaced")
    held = RunLock(lock_path(results_dir), fd, identity(token))
    try:
        _write_owner(results_dir, held.owner)
    except BaseException:
        held.release()
        raise
    return held


def _inherited(results_dir) -> bool:
    """True when ``CQ_LOCK_FD`` is a descriptor of this results folder that holds its lock:
    the descriptor our parent took it with (flock on the same open file is ours already)."""
    try:
        fd = int(os.environ.get(FD_ENV, ""))
    except ValueError:
        return False
    try:
        return _names(results_dir, fd) and _try_flock(fd)
    except OSError:
        return False


def held_by_parent(results_dir: str | os.PathLike) -> bool:
    """True when this process runs under the lock its parent (``cq nightly``) took: it holds
    the inherited descriptor named in ``CQ_LOCK_FD``."""
    return FD_ENV in os.environ and _inherited(results_dir)


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


def run_id() -> str | None:
    """The id of the run this process works for: its lock's token (the parent's, from
    ``CQ_LOCK_TOKEN``, or the one taken here by :func:`ensure`)."""
    if _HELD is not None and _HELD.fd >= 0:
        return _HELD.owner["token"]
    return os.environ.get(TOKEN_ENV)
