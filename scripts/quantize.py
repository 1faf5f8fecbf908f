"""Snakemake adapter of rule quantize: one (image, method) job -> cq.pipeline.quantize_file.

A bad image or a failing method gives a record with status "error" and this script exits 0,
so the report still gets built. cq's log messages (INFO, e.g. cnn training progress) and
anything written to stderr go to the job's log file.
"""

import logging
import sys

from cq.objective import Weights
from cq.pipeline import Job, ReadOptions, quantize_file


def make_job(spec: dict, time_limit_s: float | None = None) -> Job:
    """The pipeline's Job from the rule's ``params.job`` (built by rules/common.smk); the work
    on one image stops after ``time_limit_s`` and records the overrun."""
    read = spec["read"]
    background = read["background"]
    return Job(
        method=spec["method"],
        params=spec["params"],
        k=spec["k"],
        weights=Weights(**spec["weights"]),
        name=spec["name"],
        read=ReadOptions(tuple(background) if background else None, read["max_pixels"]),
        time_limit_s=time_limit_s,
    )


def log_to(log_file) -> logging.Logger:
    """Send cq's logging (INFO), warnings and stderr to the job's log file; cq's logger."""
    sys.stderr = log_file
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("cq")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").addHandler(handler)
    return logger


def outcome(record: dict) -> str:
    return record["error"] or f"score {record['scores']['score']:.2f}"


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        # The job's runtime resource (minutes, grown with the attempt) bounds the work on the
        # image, so an overrun is recorded rather than the job killed without a record.
        job = make_job(smk.params.job, time_limit_s=smk.resources.runtime * 60)
        try:  # a current record (cq.freshness) is kept: Snakemake's triggers are only a first filter
            record = quantize_file(smk.input.image, smk.params.png, smk.output.record, job, reuse=True)
        except BaseException as e:  # no record (a full disk): the log says why, the job fails
            logger.exception("%s on %s: no record written: %s", job.label, smk.input.image, e)
            log_file.flush()
            raise
        logger.info("%s on %s: %s %s", record["method"], smk.input.image, record["status"], outcome(record))


if __name__ == "__main__":  # run by Snakemake; scripts/quantize_shard.py imports make_job
    main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
