"""Finding the images of a folder, and where each (image, method) result goes.

The workflow calls this while it builds its DAG, on every start and (on a cluster) in every
job, so it is one ``os.scandir`` walk: no image is opened and no file is stat-ed beyond what
the walk returns. It never raises: an unreadable folder, a looping or escaping symlink or an
odd name is skipped and reported in ``Discovery.warnings``, because an exception while the
DAG is built would stop the whole run, ``--keep-going`` or not.

An image is named by its path relative to the input folder, with its extension and ``/`` as
separator (``space/rocket.jpg``); results mirror that name, so ``a.jpg`` and ``a.png`` in one
folder do not collide.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass, field

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp")


@dataclass
class Discovery:
    """The images found (relative POSIX paths, sorted) and what was skipped, one line each."""

    images: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def normalize_extensions(extensions) -> frozenset[str]:
    """Lower-case extensions without a leading dot: ``[".JPG", "png"]`` -> ``{"jpg", "png"}``."""
    return frozenset(e.lower().lstrip(".") for e in extensions)


def discover(root: str | os.PathLike, extensions=DEFAULT_EXTENSIONS, exclude=()) -> Discovery:
    """Every image under ``root`` whose extension is in ``extensions`` (case-insensitive).

    Hidden files and folders (name starting with ``.``) are skipped silently. Symlinks are
    followed only when they resolve inside ``root`` and do not lead back into a folder already
    walked; others are skipped with a warning. Folders in ``exclude`` (e.g. the results folder
    when it lies inside the input folder) are not walked.
    """
    found = Discovery()
    exts = normalize_extensions(extensions)
    real_root = os.path.realpath(root)
    skip = {os.path.realpath(p) for p in exclude}
    seen = {real_root}
    stack = [(os.fspath(root), "")]
    while stack:
        folder, prefix = stack.pop()
        for entry, rel in _entries(folder, prefix, found.warnings):
            if entry.is_symlink():
                target = _symlink_target(entry, rel, real_root, found.warnings)
                if target is None or not os.path.isdir(target):
                    if target is not None and _has_extension(entry.name, exts) and os.path.isfile(target):
                        _add_if_readable(found, rel, target)
                    continue
                if _inside(os.path.realpath(folder), target) or target in seen:
                    found.warnings.append(f"{rel}: skipped, symlink loops back to a folder already walked")
                    continue
                seen.add(target)
            elif not _is_dir(entry):
                if _has_extension(entry.name, exts) and _is_file(entry):
                    _add_if_readable(found, rel, entry.path)
                continue
            if skip and os.path.realpath(entry.path) in skip:
                continue
            stack.append((entry.path, rel + "/"))
    found.images.sort()
    return found


def _add_if_readable(found: Discovery, rel: str, path: str) -> None:
    """Keep an image this process may read; report one it may not. Snakemake checksums job
    inputs when a job ends, and an unreadable input aborts the whole run, keep-going or not."""
    if os.access(path, os.R_OK):
        found.images.append(rel)
    else:
        found.warnings.append(f"{rel}: skipped, not readable (permission denied)")


def _entries(folder: str, prefix: str, warnings: list[str]):
    """(entry, relative path) for each visible, nameable entry of ``folder``; never raises."""
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as e:
        where = prefix.rstrip("/") or f"input folder {os.fspath(folder)!r}"
        warnings.append(f"{where}: cannot read folder ({e.strerror or e})")
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        rel = prefix + entry.name
        try:
            rel.encode("utf-8")
        except UnicodeEncodeError:
            warnings.append(f"{rel.encode('utf-8', 'backslashreplace').decode()}: skipped, name is not valid UTF-8")
            continue
        if "\n" in entry.name or "\r" in entry.name:
            warnings.append(f"{rel!r}: skipped, name contains a line break")
            continue
        yield entry, rel


def _symlink_target(entry: os.DirEntry, rel: str, real_root: str, warnings: list[str]) -> str | None:
    """The resolved target of a symlink inside ``real_root``, or None (and a warning)."""
    target = os.path.realpath(entry.path)
    if not os.path.exists(target):
        warnings.append(f"{rel}: skipped, broken or looping symlink")
        return None
    if not _inside(target, real_root):
        warnings.append(f"{rel}: skipped, symlink points outside the input folder ({target})")
        return None
    return target


def _inside(path: str, folder: str) -> bool:
    """True when real path ``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _has_extension(name: str, exts: frozenset[str]) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot and stem) and ext.lower() in exts


def report_warnings(discovery: Discovery, stream=None) -> None:
    """Print the skipped entries to stderr, one line each, so a user sees what was left out."""
    stream = stream or sys.stderr
    for line in discovery.warnings:
        print(f"cq: warning: {line}", file=stream)


# --- where results go: one place, shared by the workflow, its scripts and the tests ---------

# A name component longer than this (in UTF-8 bytes) is shortened in result paths, so that
# the longest file made from it (``.{name}.json.XXXXXXXX.tmp``, a log, a benchmark) stays
# under the 255 bytes most file systems allow.
MAX_COMPONENT_BYTES = 200
_HASH_CHARS = 12
_MAX_EXT_BYTES = 16
# The form of a shortened component: ``~``, the hash, then the extension kept (if any).
_HASHED_FORM = re.compile(r"~[0-9a-f]{%d}(\.[^.]{0,%d})?\Z" % (_HASH_CHARS, _MAX_EXT_BYTES))


# Snakemake reads "{name}" in a path as a wildcard and "<name>" as a path variable, with no
# escape: result names percent-encode braces and angle brackets (and "%", so that no two
# names meet), and no image name ever reaches Snakemake's parsers.
_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D", "<": "%3C", ">": "%3E"})


def result_key(image: str) -> str:
    """The name of an image's results: its relative path with ``%{}<>`` percent-encoded, and
    every component over :data:`MAX_COMPONENT_BYTES` cut to a stem plus ``~`` and a hash of
    the whole component (extension kept), so that no result path is ever "File name too long".

    Collision-free by construction: the encoding is one to one, and a short component that
    already has the shortened form (``...~0123456789ab.png``, say a file named as another
    image's results are) is hashed too, so a component keeps its (encoded) name exactly when
    it does not have that form, and two names share a key only if their hashes do.
    """
    return "/".join(_short_component(part.translate(_ESCAPES)) for part in image.split("/"))


def _short_component(part: str) -> str:
    raw = part.encode("utf-8")
    if len(raw) <= MAX_COMPONENT_BYTES and not ("~" in part and _HASHED_FORM.search(part)):
        return part
    digest = hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]
    stem, dot, ext = part.rpartition(".")
    tail = f".{ext}" if dot and stem and len(ext.encode()) <= _MAX_EXT_BYTES else ""
    room = MAX_COMPONENT_BYTES - len(tail.encode()) - 1 - _HASH_CHARS
    head = raw[:room].decode("utf-8", "ignore")  # never half a character
    return f"{head}~{digest}{tail}"


def result_path(results_dir: str, method: str, image: str, suffix: str) -> str:
    """``{results_dir}/{method}/{key}{suffix}`` where key is :func:`result_key` of the image
    (its relative path, extension kept, for any name that fits)."""
    return f"{results_dir}/{method}/{result_key(image)}{suffix}"


def image_of_result(results_dir: str, path: str, suffix: str = ".json") -> tuple[str, str]:
    """(method, result key) back from a result path made by :func:`result_path`; the key is
    the image's relative path unless a component of it was too long (see :func:`result_key`)."""
    rel = os.path.relpath(path, results_dir).replace(os.sep, "/")
    method, _, rest = rel.partition("/")
    if not rest.endswith(suffix):
        raise ValueError(f"{path}: not a {suffix} result under {results_dir}")
    return method, rest[: -len(suffix)]
