# Run history (cq/history.py): every run that executes something appends one line to
# {results_dir}/history.jsonl (start, end, images new/changed/unchanged/deleted, failed, time per
# method), shown by the report. The nightly profile forces the report, so a night with nothing
# new still runs a job and gets its line. Hooks run in the main process only, after the lock.

import cq.history as cq_history


def _history_settings():
    """The runtime settings in effect: shows in the history which profile a run used."""
    execution, dag = workflow.execution_settings, workflow.dag_settings
    return {
        "keep_going": execution.keep_going,
        "latency_wait": execution.latency_wait,
        "rerun_incomplete": dag.force_incomplete,
        "rerun_triggers": sorted(str(getattr(t, "name", t)).lower() for t in dag.rerun_triggers),
        "forcerun": sorted(dag.forcerun),
        "max_checksum_file_size": dag.max_checksum_file_size,
    }


onstart:
    cq_history.begin(RESULTS, INPUT_DIR, IMAGES, list(METHODS),
                     prune_deleted=bool(config.get("prune_deleted", False)),
                     other_dirs=(LOGS, BENCHMARKS), settings=_history_settings(),
                     skipped=DISCOVERY.warnings)


onsuccess:
    cq_history.finish(RESULTS, IMAGES, list(METHODS), status="ok")


onerror:
    cq_history.finish(RESULTS, IMAGES, list(METHODS), status="error")
