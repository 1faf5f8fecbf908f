"""The workflow's settings and input functions; the logic lives in cq (cq.config, cq.run).
Parsed at start-up and, on a cluster, in every job: one config check, one directory walk.
No file name reaches Snakemake's parsers: results are named by their key (cq.discover.result_key,
free of braces and angle brackets), and images are passed through params functions."""

import json
import logging
import os
import re
import shlex
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod

from cq.config import ConfigError, load, scaled
from cq.discover import result_key, result_path
from cq.history import ShrunkError
from cq.lock import LockedError, LockError
from cq.methods.cnn_folder.folder import workflow_plan
from cq.outcome import REPORT_ENV, all_failed
from cq.run import Run, run_settings
from cq.shards import SHARDS_FOLDER, listing_path, manifest_path, shard_runtime
from cq.terminal import brief

try:
    SETTINGS = load(config, os.path.join(workflow.basedir, "config/schema.yaml"))
    RUN = Run.plan(SETTINGS, warn=workflow.is_main_process)
    CNN_FOLDER = workflow_plan(config, SETTINGS, RUN.images)  # fills in its jobs' network (rules/cnn_folder.smk)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
INPUT_DIR, RESULTS, LOGS, BENCHMARKS = (SETTINGS.input_dir, SETTINGS.results_dir, SETTINGS.logs_dir,
                                        SETTINGS.benchmarks_dir)
METHODS, IMAGES, SHARDS = SETTINGS.methods, RUN.images, RUN.shards
IMAGE_OF_KEY = {result_key(image): image for image in IMAGES}
# The terminal: cq's progress line instead of Snakemake's listing (`--config terminal=full`).
TERMINAL = brief(logging.getLogger("snakemake.logging"), SETTINGS.terminal) if workflow.is_main_process else None


def jobs_command() -> str:
    """How the quantize jobs run cq (cq.jobs): the Python running Snakemake, or the job
    environment's under --sdm conda or apptainer, with this workflow's cq first on the search
    path (a job environment need not install it). A params value, so never format-parsed."""
    isolated = {DeploymentMethod.CONDA, DeploymentMethod.APPTAINER} & set(workflow.deployment_settings.deployment_method)
    python = "python" if isolated else sys.executable
    return f"PYTHONPATH={shlex.quote(workflow.basedir)}${{PYTHONPATH:+:$PYTHONPATH}} {shlex.quote(python)} -m cq.jobs"


CQ_JOBS = jobs_command()


wildcard_constraints:
    method="|".join(re.escape(m) for m in METHODS),
    key=".+",
    shard=r"\d+",


def start_run():
    """The run's start check (cq.run.Run.start), once, before the DAG meets any record: in a
    real run's main process, cq's lock, then the output of every result whose record is not
    current is deleted, so that its job runs (missing targets always do); else a count."""
    if workflow.is_main_process:
        execute = workflow.executor_plugin is not None and not (workflow.dryrun or workflow.touch)
        if TERMINAL and not execute:  # a dry run's answer is Snakemake's listing
            TERMINAL.remove()
        try:
            RUN.start(execute=execute)
        except (LockedError, LockError, ShrunkError) as e:
            raise WorkflowError(str(e)) from None


def get_final_output(wildcards):
    """What `snakemake` builds by default: every record (or shard manifest), and the report."""
    start_run()
    return [f"{RESULTS}/report.csv", f"{RESULTS}/report.html", *get_records(wildcards)]


def get_records(wildcards):
    """Every result record (one job per (image, method)); in shard mode, every shard's manifest."""
    start_run()
    if SHARDS:
        return [manifest_path(RESULTS, m, shard) for m in METHODS for shard in SHARDS]
    return [result_path(RESULTS, m, image, ".json") for m in METHODS for image in IMAGES]


def get_shard_runtime(wildcards, attempt):
    """A shard job's minutes (cq.shards.shard_runtime), more on each retry."""
    return shard_runtime(METHODS[wildcards.method]["runtime"], len(SHARDS.get(wildcards.shard, ())),
                         SETTINGS.shard_max_runtime, attempt)
