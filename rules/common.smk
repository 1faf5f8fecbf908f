"""Helpers of the workflow: config checks, the method table, image discovery, input functions.

Everything here runs whenever the Snakefile is parsed (at start-up and, on a cluster, in every
job), so it stays cheap: one directory walk, one look at the method registry, no image opened.
"""

import inspect
import os
import re
import sys

import snakemake.pathvars
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from cq.discover import (assign_shards, discover, report_warnings, resolve_shard_size, result_path,
                         shard_listing, write_if_changed)
from cq.methods import all_methods
from cq.objective import SCORING_VERSION

validate(config, "../config/schema.yaml")

# Snakemake 9 expands "<name>" in every path as a path variable, so an image named
# "<script>.png" would stop the run and one named "<logs>.png" would silently turn into
# "logs.png". This workflow defines none: take file names literally.
snakemake.pathvars.PATHVAR_REGEX = re.compile(r"(?!)(?P<name>)")

INPUT_DIR = os.path.normpath(config["input_dir"])
RESULTS = os.path.normpath(config["results_dir"])
LOGS = os.path.normpath(config["logs_dir"])
BENCHMARKS = os.path.normpath(config["benchmarks_dir"])

# Keys of a method section or variant that configure the job, not the method.
JOB_KEYS = {"gpu": False, "threads": 1, "mem_mb": 2000, "runtime": 30}


def _config_error(message):
    raise WorkflowError(f"config: {message}")


def _check_params(label, method, params):
    """Stop at start-up on a parameter the method does not take, naming it."""
    signature = inspect.signature(method.fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in signature):
        return
    known = {p.name for p in signature if p.kind is p.KEYWORD_ONLY} | set(method.defaults)
    for name in params:
        if name not in known:
            _config_error(
                f"{label}: unknown parameter {name!r} of method {method.name!r}; "
                f"it takes: {', '.join(sorted(known)) or 'no parameters'}"
            )


def _method_spec(label, registry, variants):
    """(base method name, section merged with the variant's overrides) for a column label."""
    if label in variants:
        if label in registry:
            _config_error(f"variants: {label!r} is also a method name; rename the variant")
        spec = dict(variants[label])
        base = spec.pop("method")
        if base not in registry:
            _config_error(
                f"variants: {label}: method {base!r} is not registered; known: {', '.join(registry)}"
            )
        return base, {**(config.get(base) or {}), **spec}
    if label in registry:
        return label, dict(config.get(label) or {})
    _config_error(
        f"methods: {label!r} is neither a registered method ({', '.join(registry)}) "
        f"nor a variant ({', '.join(variants) or 'none defined'})"
    )


def resolve_methods():
    """Column label -> what its jobs run: the Job fields (``job``) and the job's settings."""
    registry = all_methods()
    variants = config.get("variants") or {}
    table = {}
    for label in config["methods"]:
        base, spec = _method_spec(label, registry, variants)
        method = registry[base]
        settings = {key: spec.pop(key, default) for key, default in JOB_KEYS.items()}
        _check_params(label, method, spec)
        if "threads" in method.defaults:  # one knob: the threads the job reserves and uses
            spec["threads"] = settings["threads"]
        reason = method.unavailable_reason()
        if reason:
            print(f"cq: warning: {reason}; its jobs will write error records", file=sys.stderr)
        job = {
            "method": base,
            "name": label,
            "version": method.version,
            # The scoring code's version: a fix of the score recomputes every record it touched.
            "scoring_version": SCORING_VERSION,
            "params": dict(sorted({**method.defaults, **spec}.items())),
            "k": config["k"],
            "weights": dict(sorted(config["weights"].items())),
            "read": dict(sorted(config["read"].items())),
        }
        table[label] = {"job": job, **settings}
    return table


def find_images():
    """Relative paths of the input images; skipped entries are reported, never fatal."""
    if not os.path.isdir(INPUT_DIR):
        _config_error(f"input_dir {INPUT_DIR!r} is not a folder")
    found = discover(
        INPUT_DIR, config["extensions"], exclude=[RESULTS, LOGS, BENCHMARKS, ".snakemake"]
    )
    report_warnings(found)
    if not found.images:
        print(f"cq: warning: no images found under {INPUT_DIR!r}", file=sys.stderr)
    return found.images


def plan_shards():
    """Shard name -> its images, or {} for one job per (image, method) (see "Large folders"
    in the README). The main process writes each shard's listing, the input of its jobs,
    only where it changed, so an unchanged shard's jobs stay done; a job on a cluster, which
    parses this file again, only reads them."""
    size = resolve_shard_size(config.get("shard_size", "auto"), len(IMAGES))
    if not size:
        return {}
    if "shards" in METHODS:
        _config_error("methods: 'shards' names the folder of the shard manifests; rename the variant")
    shards = assign_shards(IMAGES, size)
    if workflow.is_main_process:
        for name, images in shards.items():
            write_if_changed(shard_listing_path(name), shard_listing(INPUT_DIR, images))
    return shards


def shard_listing_path(shard):
    return f"{RESULTS}/shards/_images/{shard}.tsv"


METHODS = resolve_methods()
IMAGES = find_images()
SHARDS = plan_shards()


wildcard_constraints:
    method="|".join(re.escape(m) for m in METHODS),
    image=".+",
    shard=r"\d+",


# --- input functions and per-job settings ---------------------------------------------------
# One job per (image, method) (rule quantize) or, in shard mode, per (shard, method) (rule
# quantize_shard); the report takes the records, or the shards' manifests.


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
    return [f"{RESULTS}/shards/{m}/{shard}.tsv" for m in METHODS for shard in SHARDS]


def get_listing(wildcards):
    return shard_listing_path(wildcards.shard)


def get_image_runtime(wildcards):
    """Minutes of work allowed on one image (the method's runtime): the per-image time limit."""
    return METHODS[wildcards.method]["runtime"]


def get_shard_runtime(wildcards, attempt):
    """A shard job's time: the method's runtime for each of its images, at most
    shard_max_runtime (a shard cut short by that keeps its finished records: its retry,
    with more time, or the next run goes on from there), more on each retry."""
    n_images = len(SHARDS.get(wildcards.shard, ())) or 1
    runtime = METHODS[wildcards.method]["runtime"]
    cap = max(runtime, config.get("shard_max_runtime", 1440))
    return min(runtime * n_images, cap) * attempt


def get_job(wildcards):
    return METHODS[wildcards.method]["job"]


def get_threads(wildcards):
    return METHODS[wildcards.method]["threads"]


def get_mem_mb(wildcards, attempt):
    """The method's memory, more on each retry (``--retries``) after running out."""
    return METHODS[wildcards.method]["mem_mb"] * attempt


def get_runtime(wildcards, attempt):
    return METHODS[wildcards.method]["runtime"] * attempt


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
