"""Snakemake adapter of rule quantize_shard: one method over one shard of images.

The shard's listing (written by rules/common.smk when the workflow starts) names its images.
Each image goes through cq.pipeline.quantize_file exactly as in rule quantize and gets the same
``{results_dir}/{method}/{image}.png`` and ``.json``; a record that is still valid is kept as
it is, so a shard that runs again because one of its images was added or changed recomputes
that image only and costs a sha256 for each of the others. A record is kept when:

- it is a successful result of the same image content, method, method version, parameters, k
  and weights, with its PNG (cq.pipeline's content-addressed cache, ``reuse=True``); or
- it is an error record of the same image content and job (a corrupt file, a time limit): a
  per-image job that wrote it would not run again either;

and in both cases the full job (read options included, which the records do not carry) is the
one the shard's previous run recorded for that image, when there was one (records written by
rule quantize, or before the shard count changed, are trusted on the above alone).

Last, the manifest (the rule's declared output) is written atomically: one line per image,
its record's path, status and the job's fingerprint. If a record could not be written at all
(a full disk), the other images are still done, then the job fails without a manifest, and
the next run redoes only what is missing.
"""

import csv
import hashlib
import io
import json
import os
import sys
import time

from cq.discover import read_listing, result_path, write_if_changed
from cq.methods import UnknownMethodError, get_method
from cq.pipeline import file_sha256, quantize_file
from cq.record import RecordError, read_record
from quantize import log_to, make_job, outcome  # scripts/ is on Snakemake's script path

MANIFEST_COLUMNS = ("image", "record", "status", "job")


def fingerprint(spec: dict) -> str:
    """A short hash of the whole job (method, version, parameters, k, weights, read options)."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(path: str) -> dict[str, dict]:
    """Image -> its manifest row; empty when the file is missing or unreadable."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return {row["image"]: row for row in csv.DictReader(f, dialect="excel-tab")}
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return {}


def kept_error(json_path: str, image_path: str, job) -> dict | None:
    """The error record at ``json_path`` if it is this job's result on this image content
    (the same key as cq.pipeline.cached_record's, for a failure)."""
    try:
        method = get_method(job.method)
        record = read_record(json_path)
        if record["status"] != "error" or not record["image"]["sha256"] or record.get("transient"):
            return None
        same = (record["method"], record["base_method"], record["method_version"], record["params"],
                record["k"], record["weights"]) == (job.label, job.method, method.version,
                                                    {**method.defaults, **job.params}, job.k,
                                                    job.weights.as_dict())
        return record if same and record["image"]["sha256"] == file_sha256(image_path) else None
    except (RecordError, UnknownMethodError, OSError, KeyError, TypeError):
        return None


def results_dir(manifest: str) -> str:
    """The results folder of a manifest ``{results_dir}/shards/{method}/{shard}.tsv``."""
    return os.path.dirname(os.path.dirname(os.path.dirname(manifest))) or "."


def quantize_one(image: str, smk, job, fp: str, previous: dict) -> tuple[dict, bool]:
    """(record, whether it was kept) for one image of the shard."""
    results, method = results_dir(smk.output.manifest), smk.wildcards.method
    image_path = f"{smk.params.input_dir}/{image}"
    json_path = result_path(results, method, image, ".json")
    png_path = result_path(results, method, image, ".png")
    before = previous.get(image)
    same_job = before is None or before.get("job") == fp  # no previous line: trust the cache
    if same_job and (before is None or before.get("status") == "error"):
        record = kept_error(json_path, image_path, job)
        if record is not None:
            return record, True
    mtime = _mtime(json_path)
    record = quantize_file(image_path, png_path, json_path, job, reuse=same_job)
    return record, mtime is not None and _mtime(json_path) == mtime


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def main(smk) -> None:
    manifest, prev_copy = smk.output.manifest, previous_path(smk.output.manifest)
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        spec = smk.params.job
        fp = fingerprint(spec)
        # The method's runtime (minutes) bounds the work on each image, as in rule quantize;
        # the shard job itself asks for the time of all its images (rules/common.smk).
        job = make_job(spec, time_limit_s=smk.params.image_runtime * 60)
        images = read_listing(smk.input.listing)
        previous = read_manifest(prev_copy)
        rows, failed, kept, t0 = [], [], 0, time.perf_counter()
        for image in images:
            try:
                record, was_kept = quantize_one(image, smk, job, fp, previous)
            except Exception as e:  # the record itself could not be written: finish the others
                logger.exception("%s on %s: no record written", job.label, image)
                failed.append(f"{image}: {type(e).__name__}: {e}")
                continue
            kept += was_kept
            if not was_kept:
                logger.info("%s on %s: %s %s", record["method"], image, record["status"], outcome(record))
            rows.append((image, result_path(results_dir(manifest), smk.wildcards.method, image, ".json"),
                         record["status"], fp))
        logger.info("shard %s of %s: %d images, %d recomputed, %d kept, %d without a record, %.1f s",
                    smk.wildcards.shard, job.label, len(images), len(rows) - kept, kept, len(failed),
                    time.perf_counter() - t0)
        if failed:
            sys.exit(f"{len(failed)} record(s) of shard {smk.wildcards.shard} could not be written, "
                     f"first: {failed[0]}")
        out = io.StringIO()
        writer = csv.writer(out, dialect="excel-tab", lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
        # The copy that the next run of this shard compares with (Snakemake deletes a job's
        # declared output before running it), then the manifest itself: the commit point.
        write_if_changed(prev_copy, out.getvalue())
        write_if_changed(manifest, out.getvalue())


def previous_path(manifest: str) -> str:
    """Where a shard job keeps a copy of its manifest: ``.{shard}.prev.tsv`` beside it."""
    folder, name = os.path.split(manifest)
    return os.path.join(folder, f".{name[:-4] if name.endswith('.tsv') else name}.prev.tsv")


if __name__ == "__main__":
    main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
