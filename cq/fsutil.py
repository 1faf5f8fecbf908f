"""Writing files so that a reader never sees half of one: the one home of cq's file helpers.

Every output of cq (PNG, record, report, listing, manifest, history) goes through
:func:`atomic_path`: a temporary file beside the target, renamed over it only when complete,
with the mode a plain new file gets under the process's umask (``mkstemp`` makes 0600, and
results are ordinary files that a web server or a colleague may read).
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@functools.cache
def file_mode() -> int:
    """The mode a plain new file gets here: 0o666 less the umask.

    Reading the umask means setting it, which is not thread-safe: it is read once, on the
    first call (in the main thread, before any writer pool starts).
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True):
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    A failure (an exception, a full disk) removes the temporary file, so ``path`` holds its
    old content or the complete new one, never half of it. ``fsync=False`` skips the flush to
    disk (about 7 ms a file): for files cheap to remake, such as thumbnails, where a crash may
    leave an empty file but never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, fsync=fsync) as tmp:
        Path(tmp).write_bytes(data)


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless the file already holds exactly that text,
    so that its modification time (which drives Snakemake's reruns) moves only on a real
    change. Returns True when it wrote."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if f.read() == text:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write_bytes(path, text.encode("utf-8"))
    return True


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
