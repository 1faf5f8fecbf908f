# The run's begin and end (cq.run.Run, shared with `cq nightly`), in the main process only.


def _close(status):
    """End the progress line, close the run; a run in which every result failed stops
    Snakemake with exit 1."""
    if TERMINAL:
        TERMINAL.close()
    summary = RUN.close(status, report_built=status == "ok" and os.environ.get(REPORT_ENV) != "cq")
    if status == "ok" and all_failed(summary):
        raise WorkflowError("cq: every result of this run failed; see the report")


onstart:
    RUN.begin(run_settings(workflow.execution_settings, workflow.dag_settings))


onsuccess:
    _close("ok")


onerror:
    _close("error")
