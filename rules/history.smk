# Nightly safety (cq/lock.py, cq/freshness.py, cq/history.py, cq/outcome.py). In the main
# process only:
# - at parse time: settings guards, then the records decide what is stale (another image
#   content or job spec than the record's, a transient failure), and those outputs are forced,
#   whatever Snakemake's mtime and metadata say;
# - onstart: cq's lock on the results folder (held by `cq nightly`, or taken here), then the
#   run's history begins;
# - onsuccess / onerror: the history line, a report even when jobs died (missing results
#   listed with their reason), results/best/, and a short summary.

import time

import cq.history as cq_history
import cq.lock as cq_lock
from cq import freshness as cq_freshness
from cq import guards as cq_guards
from cq import outcome as cq_outcome


def _history_settings():
    """The runtime settings in effect: shows in the history which profile a run used."""
    execution, dag = workflow.execution_settings, workflow.dag_settings
    return {
        "keep_going": execution.keep_going,
        "latency_wait": execution.latency_wait,
        "rerun_incomplete": dag.force_incomplete,
        "rerun_triggers": sorted(str(getattr(t, "name", t)).lower() for t in dag.rerun_triggers),
        "forcerun": sorted(f for f in dag.forcerun if "/" not in f),
        "max_checksum_file_size": dag.max_checksum_file_size,
        "lock": "cq" if not execution.lock else "cq+snakemake",
    }


def _shard_of():
    return {image: shard for shard, images in SHARDS.items() for image in images}


def _output_of(label, image, shard_of):
    if SHARDS:
        return manifest_path(RESULTS, label, shard_of[image])
    return result_path(RESULTS, label, image, ".json")


def _log_of(label, image, shard_of=None):
    if SHARDS:
        shard = (shard_of or _shard_of()).get(image)
        return f"{LOGS}/{SHARDS_FOLDER}/{label}/{shard}.log" if shard else None
    return result_path(LOGS, label, image, ".log")


def _force_stale():
    """Force the outputs whose records are not current (cq.freshness): the record decides."""
    shard_of = _shard_of() if SHARDS else {}
    forced = set()
    refresh = cq_lock.held_by_parent(RESULTS)  # a touched image's new stat is stored under the lock only
    for label in METHODS:
        fp = cq_freshness.spec_fingerprint(METHODS[label]["spec"])
        pairs = [(f"{INPUT_DIR}/{image}", result_path(RESULTS, label, image, ".png"),
                  result_path(RESULTS, label, image, ".json"), fp) for image in IMAGES]
        for json_path, image_path, why in cq_freshness.stale_outputs(pairs, refresh=refresh):
            if why == "no record" and not SHARDS:
                continue  # Snakemake runs a job whose output is missing anyway
            forced.add(_output_of(label, image_path[len(INPUT_DIR) + 1:], shard_of))
    return forced


def _force_in_dag(forced):
    """Add ``forced`` to the DAG's forced outputs, as ``--forcerun FILE`` would. The DAG
    settings do not exist yet while the Snakefile is parsed, and 100,000 paths would not fit
    on a command line: the DAG gets them when it is made (Snakemake 9's Workflow._prepare_dag)."""
    prepare = workflow._prepare_dag

    def prepare_and_force(*args, **kwargs):
        result = prepare(*args, **kwargs)
        workflow._dag.forcefiles.update(forced)
        return result

    workflow._prepare_dag = prepare_and_force


if workflow.is_main_process:
    try:
        cq_guards.check_config(config, LOGS, BENCHMARKS)
    except cq_guards.SettingsError as e:
        raise WorkflowError(str(e)) from None
    _force_in_dag(_force_stale())

CQ_RUN = {}


onstart:
    try:
        cq_lock.ensure(RESULTS)
    except cq_lock.LockedError as e:
        raise WorkflowError(str(e)) from None
    CQ_RUN["since"] = time.time()
    cq_history.begin(RESULTS, INPUT_DIR, IMAGES, list(METHODS),
                     prune_deleted=bool(config.get("prune_deleted", False)),
                     other_dirs=(LOGS, BENCHMARKS), settings=_history_settings(),
                     skipped=DISCOVERY.warnings)


def _conclude(status):
    """best/, the history line (its status says what happened: ok, failed when every result
    of this run failed, incomplete when results are missing, error), then the report when the
    run's report job did not build it (a job died; or under `cq nightly`, which leaves the
    report to this hook so that the previous page is never deleted first), and a summary."""
    shard_of = _shard_of() if SHARDS else None

    def finish(summary):
        return cq_history.finish(RESULTS, IMAGES, list(METHODS), status=cq_outcome.status_of(summary, status))

    summary = cq_outcome.conclude(
        RESULTS, INPUT_DIR, IMAGES, list(METHODS), lambda m, i: _log_of(m, i, shard_of),
        CQ_RUN.get("since", time.time()), finish=finish, skipped=DISCOVERY.warnings,
        report_built=status == "ok" and os.environ.get(cq_outcome.REPORT_ENV) != "cq")
    cq_outcome.print_summary(summary)


onsuccess:
    _conclude("ok")


onerror:
    _conclude("error")
