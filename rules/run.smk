# The run's begin and end (cq.run.Run, shared with `cq nightly`), in the main process only.


def _run_settings():
    """The runtime settings in effect: shows in the history which profile a run used."""
    execution, dag = workflow.execution_settings, workflow.dag_settings
    return {"keep_going": execution.keep_going, "latency_wait": execution.latency_wait,
            "rerun_incomplete": dag.force_incomplete,
            "rerun_triggers": sorted(str(getattr(t, "name", t)).lower() for t in dag.rerun_triggers),
            "forcerun": sorted(f for f in dag.forcerun if "/" not in f),
            "lock": "cq" if not execution.lock else "cq+snakemake"}


def _close(status):
    """Close the run; a run in which every result failed stops Snakemake with exit 1."""
    summary = RUN.close(status, report_built=status == "ok" and os.environ.get(REPORT_ENV) != "cq")
    if status == "ok" and all_failed(summary):
        raise WorkflowError("cq: every result of this run failed; see the report")


onstart:
    RUN.begin(_run_settings())


onsuccess:
    _close("ok")


onerror:
    _close("error")
