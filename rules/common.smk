"""Validation, discovery and the input functions of the workflow; the logic lives in cq.

Everything here runs whenever the Snakefile is parsed (at start-up and, on a cluster, in every
job), so it stays cheap: one directory walk, one look at the method registry, no image opened.
"""

import os
import re
import sys

import snakemake.pathvars
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cq.discover import discover, report_warnings, result_key, result_path
from cq.methods import ConfigError, resolve, scaled, unavailable
from cq.shards import (SHARDS_FOLDER, assign_shards, listing_digest, listing_path, manifest_path,
                       resolve_shard_size, shard_runtime, write_listing)

try:
    validate(config, "../config/schema.yaml")
except WorkflowError as e:  # one line naming the key, not the whole schema
    cause = e.__context__  # the jsonschema.ValidationError
    if not hasattr(cause, "absolute_path"):
        raise
    where = ".".join(str(part) for part in cause.absolute_path) or "(top level)"
    raise WorkflowError(f"config: {where}: {cause.message}") from None

# Snakemake 9 expands "<name>" in every path as a path variable, so an image named
# "<script>.png" would stop the run and one named "<logs>.png" would silently turn into
# "logs.png". This workflow defines none: take file names literally.
snakemake.pathvars.PATHVAR_REGEX = re.compile(r"(?!)(?P<name>)")

INPUT_DIR = os.path.normpath(config["input_dir"])
RESULTS = os.path.normpath(config["results_dir"])
# Logs and benchmarks follow the results folder unless set, so two folders never share them.
LOGS = os.path.normpath(config.get("logs_dir") or f"{RESULTS}/logs")
BENCHMARKS = os.path.normpath(config.get("benchmarks_dir") or f"{RESULTS}/benchmarks")


def _resolve():
    with open(os.path.join(workflow.basedir, "config/schema.yaml"), encoding="utf-8") as f:
        settings = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["properties"]
    try:
        table = resolve(config, settings)
    except ConfigError as e:
        raise WorkflowError(f"config: {e}") from None
    for folder in {SHARDS_FOLDER, *(os.path.relpath(d, RESULTS) for d in (LOGS, BENCHMARKS))}:
        if folder in table:
            raise WorkflowError(f"config: methods: {folder!r} names a folder of the results; rename it")
    for reason in unavailable(table):
        print(f"cq: warning: {reason}; its jobs will write error records", file=sys.stderr)
    return table


def _discover():
    """The input images (one walk, shared with rules/history.smk); skips are warned, never fatal."""
    if not os.path.isdir(INPUT_DIR):
        raise WorkflowError(f"config: input_dir {INPUT_DIR!r} is not a folder")
    found = discover(INPUT_DIR, config["extensions"], exclude=[RESULTS, LOGS, BENCHMARKS, ".snakemake"])
    report_warnings(found)
    if not found.images:
        print(f"cq: warning: no images found under {INPUT_DIR!r}", file=sys.stderr)
    return found


METHODS = _resolve()
DISCOVERY = _discover()
IMAGES = DISCOVERY.images
# Result key (the rules' wildcard, a path that always fits) -> the image's relative path.
IMAGE_OF_KEY = {result_key(image): image for image in IMAGES}
# Shard mode (see "Large folders" in the README): shard name -> its images; {} for one job
# per (image, method).
SHARD_SIZE = resolve_shard_size(config.get("shard_size", "auto"), len(IMAGES))
SHARDS = assign_shards(IMAGES, SHARD_SIZE) if SHARD_SIZE else {}


wildcard_constraints:
    method="|".join(re.escape(m) for m in METHODS),
    key=".+",
    shard=r"\d+",


# --- input functions and per-job settings ---------------------------------------------------


def get_final_output():
    """What `snakemake` builds by default: the report over every (image, method)."""
    return [f"{RESULTS}/report.csv", f"{RESULTS}/report.html"]


def get_records(wildcards):
    """Every result record, one per (image, method); none in shard mode (see get_manifests)."""
    if SHARDS:
        return []
    return [result_path(RESULTS, m, image, ".json") for m in METHODS for image in IMAGES]


def get_manifests(wildcards):
    """In shard mode, every shard's manifest, one per (shard, method): they name the records."""
    return [manifest_path(RESULTS, m, shard) for m in METHODS for shard in SHARDS]


def get_image(wildcards):
    return f"{INPUT_DIR}/{IMAGE_OF_KEY[wildcards.key]}"


def get_listing(wildcards):
    return listing_path(RESULTS, wildcards.shard)


def get_listing_digest(wildcards):
    """A hash of the shard's listing as it would be now (sizes and mtimes of its images): a
    parameter of rule shard_listing, so that the listing is rewritten, and the shard's jobs
    rerun, exactly when one of its images was added, deleted or changed. Never written by a
    dry run."""
    return listing_digest(INPUT_DIR, SHARDS[wildcards.shard])


def get_spec(wildcards):
    """The job's spec: method, version, resolved parameters, k, weights, read options and
    scoring version; as a rule parameter, a change of any reruns that column only."""
    return METHODS[wildcards.method]["spec"]


def get_image_runtime(wildcards):
    """Minutes of work allowed on one image (the method's runtime): the per-image time limit."""
    return METHODS[wildcards.method]["runtime"]


def get_shard_runtime(wildcards, attempt):
    """A shard job's minutes (cq.shards.shard_runtime), more on each retry."""
    return shard_runtime(METHODS[wildcards.method]["runtime"], len(SHARDS.get(wildcards.shard, ())),
                         config.get("shard_max_runtime", 1440), attempt)


def get_threads(wildcards):
    return METHODS[wildcards.method]["threads"]


def get_mem_mb(wildcards, attempt):
    """The method's memory, more on each retry (``--retries``) after running out."""
    return scaled(METHODS[wildcards.method]["mem_mb"], attempt)


def get_runtime(wildcards, attempt):
    return scaled(METHODS[wildcards.method]["runtime"], attempt)


def get_gpu(wildcards):
    return int(METHODS[wildcards.method]["gpu"])


def get_history(wildcards):
    """The run history that the report shows: the finished runs of ``{RESULTS}/history.jsonl``.

    Declared ancient: the run's own line is appended when it ends (onsuccess), after the
    report, and must not make the report outdated. Snakemake has no optional input, so a real
    run (never a dry run) creates the file empty when missing: the report's set of inputs is
    then the same from the first run on, and a second run has nothing to do.
    """
    path = f"{RESULTS}/history.jsonl"
    if not os.path.exists(path) and workflow.is_main_process and not workflow.dryrun:
        os.makedirs(RESULTS, exist_ok=True)
        open(path, "a").close()
    return ancient(path) if os.path.exists(path) else []
