"""The cost of a Snakefile parse: what every `snakemake` start pays, and on a cluster every job.

For each workflow folder given (a checkout whose results are complete, so that a dry run has
nothing to do), fresh processes in turn measure, in CPU seconds of that process:
- ``import``: Snakemake's own modules and plugins (the same for every checkout);
- ``parse``: reading the Snakefile and its rules/*.smk, the code cq runs there included
  (config validation, the method table, image discovery);
- ``dry run``: building the DAG and finding nothing to do.

    python bench/parse.py OLD_CHECKOUT NEW_CHECKOUT [--runs 7]

Each checkout's own ``cq`` is imported (PYTHONPATH is set to it). Medians are printed, and the
ratio of each checkout's parse to the first one's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import json, sys, time
from pathlib import Path
t0 = time.process_time()
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                      StorageSettings, WorkflowSettings)
import snakemake_executor_plugin_slurm  # noqa: F401 (the CLI loads every installed plugin)
t1 = time.process_time()
folder = Path(sys.argv[1])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
                      storage_settings=StorageSettings(), workflow_settings=WorkflowSettings(),
                      snakefile=folder / "Snakefile", workdir=folder)
    wf._workflow  # reads the Snakefile and every included rule file
    t2 = time.process_time()
    wf.dag(DAGSettings()).execute_workflow(executor="dryrun")
    t3 = time.process_time()
print(json.dumps({"import": t1 - t0, "parse": t2 - t1, "dry run": t3 - t2}))
"""


def measure(folder: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(folder)}
    done = subprocess.run([sys.executable, "-c", _CHILD, os.path.abspath(folder)], capture_output=True,
                          text=True, env=env, cwd=folder, timeout=300)
    if done.returncode != 0:
        sys.exit(f"{folder}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'failed'}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    runs = {folder: [] for folder in args.folders}
    for folder in args.folders:
        measure(folder)  # warm-up: file caches, .pyc
    for _ in range(args.runs):
        for folder in args.folders:  # in turn, so that a drift of the machine hits each alike
            runs[folder].append(measure(folder))
    first = None
    print(f"median CPU seconds of {args.runs} fresh processes each")
    for folder, rows in runs.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        first = first or med
        print(f"{folder}: import {med['import']:.3f}  parse {med['parse']:.3f}  dry run {med['dry run']:.3f}"
              f"  parse/first {med['parse'] / first['parse']:.2f}")


if __name__ == "__main__":
    main()
