"""Atomic writes with a plain file's mode, for the report's files (page, CSV, thumbnails)."""

from __future__ import annotations

import functools
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@functools.cache
def file_mode() -> int:
    """The mode a plain new file gets here (0o666 less the umask); read once, in the main thread."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True):
    """Yield a temporary path beside ``path``, renamed over it only if the block succeeds.

    A reader sees the old file or the whole new one, never half of one. ``fsync=False`` (for
    thumbnails, cheap to remake) skips the flush to disk: a crash may then leave an empty file.
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
