"""Shard mode: several images per job, with a membership that stays put as a folder grows.

An image's shard is a hash of its relative path modulo a power of two, so adding or deleting
an image changes its own shard only; the shard count doubles (or halves) only when the folder
crosses a power of two times the shard size, which moves images between shards but, as every
image keeps its content-addressed record, recomputes nothing.

Files, all under the results folder:
- ``shards/_images/{shard}.tsv``, the listing: the input of the shard's jobs, one line per
  image, redone (by a job, never by a dry run) when an image joins or leaves the shard;
- ``shards/{method}/{shard}.tsv``, the manifest: the job's declared output, one line per image
  with its record's path, status and the job's fingerprint.

Whether a record may be kept is the record's alone to say (its fingerprint covers the job's
full spec, read options included; cq.freshness): a shard job compares no earlier manifest.

Only the standard library is imported at module level: the Snakefile imports this module at
every parse.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import resource
import time

from cq.discover import result_path
from cq.fsutil import write_if_changed

AUTO_PER_IMAGE_MAX = 1000  # shard_size "auto": one job per (image, method) up to this many images
AUTO_SHARD_SIZE = 500      # and above it, shards of at most this many images (on average 3/4 of it)
MANIFEST_COLUMNS = ("image", "record", "status", "job")
SHARDS_FOLDER = "shards"   # under the results folder; no method may be named so

log = logging.getLogger(__name__)


# --- assignment ----------------------------------------------------------------------------

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


def shard_runtime(runtime: int, n_images: int, cap: int, attempt: int = 1) -> int:
    """Minutes a shard job asks for: its method's ``runtime`` for each image, at most ``cap``
    (a shard cut short by that keeps its finished records, and its retry or the next run goes
    on from there), times the ``attempt``."""
    return min(runtime * max(1, n_images), max(runtime, cap)) * max(1, attempt)


# --- listings and manifests ----------------------------------------------------------------

def listing_path(results_dir: str, shard: str) -> str:
    return f"{results_dir}/{SHARDS_FOLDER}/_images/{shard}.tsv"


def manifest_path(results_dir: str, method: str, shard: str) -> str:
    return f"{results_dir}/{SHARDS_FOLDER}/{method}/{shard}.tsv"


def _tsv(rows) -> str:
    out = io.StringIO()
    csv.writer(out, dialect="excel-tab", lineterminator="\n").writerows(rows)
    return out.getvalue()


def shard_listing(images) -> str:
    """A shard's listing: its images, one TSV line each. It changes only when an image joins
    or leaves the shard; whether an image's record is current is the record's to say
    (cq.run.Run.start deletes the manifest of a shard with a stale record)."""
    return _tsv((image,) for image in images)


def write_listing(path: str, images) -> bool:
    """Write a shard's listing unless it already holds the same text; True when it wrote."""
    return write_if_changed(path, shard_listing(images))


def read_listing(path: str | os.PathLike) -> list[str]:
    """The images (relative paths) of a listing written by :func:`shard_listing`."""
    with open(path, newline="", encoding="utf-8") as f:
        return [row[0] for row in csv.reader(f, dialect="excel-tab") if row]


def read_manifest(path: str | os.PathLike) -> dict[str, dict]:
    """Image -> its manifest row; empty when the file is missing or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {row["image"]: row for row in csv.DictReader(f, dialect="excel-tab")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return {}


# --- the keep policy and one shard job ---------------------------------------------------------

def _batched_proposals(images, results_dir, input_dir, job):
    """``proposals(image)``: an iterator over the method's proposal for ``image`` when the method
    runs many images a call here (cnn on a GPU), computed a batch ahead; else nothing.

    Only images without a current record are run. A batch that fails (an unreadable file, a
    method error) yields nothing, and its images are computed one by one as usual.
    """
    from cq.methods import get_method
    from cq.pipeline import load_problem, reusable_record

    method = get_method(job.method)
    params = {**method.defaults, **job.params}
    size = method.batch_size(**params) if method.batch else 1
    if size <= 1:
        return lambda image: iter(())
    todo = [image for image in images if reusable_record(
        f"{input_dir}/{image}", result_path(results_dir, job.label, image, ".png"),
        result_path(results_dir, job.label, image, ".json"), job, ok=True, error=True) is None]
    ready: dict[str, object] = {}

    def proposals(image):
        if image in todo and image not in ready:
            chunk = todo[todo.index(image):todo.index(image) + size]
            try:
                problems = [load_problem(f"{input_dir}/{name}", job) for name in chunk]
                ready.update(zip(chunk, method.batch(problems, **params)))
            except Exception as e:  # the images run one by one, each failure in its record
                log.warning("%s: batch of %d images failed (%s); running them one by one", job.label, len(chunk), e)
                ready.update(dict.fromkeys(chunk))
        found = ready.pop(image, None)
        return iter(() if found is None else (found,))

    return proposals


def run_shard(listing: str, manifest: str, input_dir: str, results_dir: str, spec: dict,
              image_time_limit_s: float | None) -> list[str]:
    """Quantize every image of a shard with one job ``spec``; write the manifest last.

    Each image gets the same ``{results_dir}/{method}/{key}.png`` and ``.json`` as in one job
    per image. A record is kept when it answers :func:`cq.pipeline.same_job` for this job and
    image content (a success with its PNG, or an error such as a corrupt file or a time limit,
    which a per-image job would not rerun either); its fingerprint covers the full spec, read
    options included. A record that cannot be written at all (a full disk) does not stop the
    other images; then no manifest is written and the failures are returned, one line each.
    """
    from cq.freshness import spec_fingerprint
    from cq.pipeline import Job, quantize_file  # numpy and the methods: only in the job
    from cq.record import describe

    job, fp = Job.from_spec(spec, time_limit_s=image_time_limit_s), spec_fingerprint(spec)
    rows, failed, kept, t0 = [MANIFEST_COLUMNS], [], 0, time.perf_counter()
    images = read_listing(listing)
    batches = _batched_proposals(images, results_dir, input_dir, job)
    for image in images:
        json_path = result_path(results_dir, job.label, image, ".json")
        png_path = result_path(results_dir, job.label, image, ".png")
        mtime = _mtime(json_path)
        try:
            record = quantize_file(f"{input_dir}/{image}", png_path, json_path, job,
                                   reuse=True, reuse_errors=True, proposal=next(batches(image), None))
        except Exception as e:  # the record itself could not be written: finish the others
            log.exception("%s on %s: no record written", job.label, image)
            failed.append(f"{image}: {type(e).__name__}: {e}")
            continue
        was_kept = mtime is not None and _mtime(json_path) == mtime
        kept += was_kept
        if not was_kept:
            log.info("%s on %s: %s", job.label, image, describe(record))
        rows.append((image, json_path, record["status"], fp))
    log.info("%s of %s: %d images, %d recomputed, %d kept, %d without a record, %.1f s; job process CPU %.2f s",
             os.path.basename(listing), job.label, len(images), len(rows) - 1 - kept, kept, len(failed),
             time.perf_counter() - t0, process_cpu_s())
    if failed:
        log.error("%d record(s) could not be written, so no manifest; first: %s", len(failed), failed[0])
    else:
        write_if_changed(manifest, _tsv(rows))  # the commit point
    return failed


def process_cpu_s() -> float:
    """CPU seconds (user + system) of this process so far, its start-up and imports included:
    the shard log's figure that bench/throughput.py compares with its records' own."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None
