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

import contextlib
import csv
import hashlib
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field

# "{name}" or "{name,regex}" in a path is a wildcard to Snakemake, with no escape: such files
# are skipped and reported rather than stopping the whole run.
_WILDCARD = re.compile(r"\{\s*[\w.]+\s*[,}]")

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
        if "{" in entry.name and _WILDCARD.search(entry.name):
            warnings.append(f"{rel}: skipped, '{{name}}' in a file name is read as a Snakemake wildcard")
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

def result_path(results_dir: str, method: str, image: str, suffix: str) -> str:
    """``{results_dir}/{method}/{image}{suffix}``: the image's relative path, extension kept."""
    return f"{results_dir}/{method}/{image}{suffix}"


def image_of_result(results_dir: str, path: str, suffix: str = ".json") -> tuple[str, str]:
    """(method, image) back from a result path made by :func:`result_path`."""
    rel = os.path.relpath(path, results_dir).replace(os.sep, "/")
    method, _, rest = rel.partition("/")
    if not rest.endswith(suffix):
        raise ValueError(f"{path}: not a {suffix} result under {results_dir}")
    return method, rest[: -len(suffix)]


# --- shards: several images per job, with a membership that stays put as a folder grows -----
#
# An image's shard is a hash of its relative path modulo a power of two, so adding or deleting
# an image changes its own shard only; the shard count doubles (or halves) only when the folder
# crosses a power of two times the shard size, which moves images between shards but, as every
# image keeps its content-addressed record, recomputes nothing.

AUTO_PER_IMAGE_MAX = 1000  # shard_size "auto": one job per (image, method) up to this many images
AUTO_SHARD_SIZE = 500      # and above it, shards of at most this many images (on average 3/4 of it)


def resolve_shard_size(setting, n_images: int) -> int:
    """Images per shard for the config value ``setting``; 0 means one job per (image, method).

    ``"auto"`` (or None) gives 0 up to :data:`AUTO_PER_IMAGE_MAX` images and
    :data:`AUTO_SHARD_SIZE` above; an integer is taken as it is (0: no shards).
    """
    if setting is None or setting == "auto":
        return 0 if n_images <= AUTO_PER_IMAGE_MAX else AUTO_SHARD_SIZE
    size = int(setting)
    if size < 0:
        raise ValueError(f"shard_size must be 'auto' or an integer >= 0, not {setting!r}")
    return size


def shard_count(n_images: int, shard_size: int) -> int:
    """The number of shards: the smallest power of two with at most ``shard_size`` images a
    shard on average (so shards hold about shard_size/2 to shard_size images)."""
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    count = 1
    while count * shard_size < n_images:
        count *= 2
    return count


def shard_index(image: str, n_shards: int) -> int:
    """The shard of an image: a stable hash of its relative path (the same in every process and
    Python version, unlike ``hash``) modulo ``n_shards``. With ``n_shards`` a power of two, the
    images of shard i of n go to shards i and i + n of 2n when the count doubles."""
    digest = hashlib.blake2b(image.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def shard_name(index: int, n_shards: int) -> str:
    """A shard's name in paths: its index, zero-padded to at least 4 digits (``0007``)."""
    return f"{index:0{max(4, len(str(n_shards - 1)))}d}"


def assign_shards(images, shard_size: int) -> dict[str, list[str]]:
    """Shard name -> its images (in the order given), for the non-empty shards, in name order."""
    n_shards = shard_count(len(images), shard_size)
    shards: dict[int, list[str]] = {}
    for image in images:
        shards.setdefault(shard_index(image, n_shards), []).append(image)
    return {shard_name(i, n_shards): shards[i] for i in sorted(shards)}


def shard_listing(input_dir: str, images) -> str:
    """A shard's listing, the input of its jobs: one TSV line per image with its size and
    modification time (ns), so that the listing changes whenever an image is added, deleted,
    replaced or touched. A file that cannot be stat-ed is listed with -1 -1 (its job then
    writes an error record for it)."""
    out = io.StringIO()
    writer = csv.writer(out, dialect="excel-tab", lineterminator="\n")
    for image in images:
        try:
            st = os.stat(os.path.join(input_dir, image))
            writer.writerow((image, st.st_size, st.st_mtime_ns))
        except OSError:
            writer.writerow((image, -1, -1))
    return out.getvalue()


def read_listing(path: str | os.PathLike) -> list[str]:
    """The images (relative paths) of a listing written from :func:`shard_listing`."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row[0] for row in csv.reader(f, dialect="excel-tab") if row]


def write_if_changed(path: str | os.PathLike, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (temporary file, then rename) unless the file
    already holds exactly that text, so its modification time moves only on a real change.
    Returns True when it wrote."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if f.read() == text:
                return False
    except OSError:
        pass
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
