"""Snakemake adapter of rule quantize: one (image, method) job -> cq.pipeline.quantize_file.

A bad image or a failing method gives a record with status "error" and the job still
succeeds. The job's runtime (minutes, grown with the attempt) bounds the work on the image,
less a margin (cq.config.time_limit_s), so an overrun is recorded before a scheduler's kill.
"""

from cq.config import time_limit_s
from cq.joblog import log_to
from cq.pipeline import Job, quantize_file
from cq.record import describe


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        job = Job.from_spec(smk.params.spec, time_limit_s=time_limit_s(smk.resources.runtime))
        try:  # a current record (cq.freshness) is kept
            record = quantize_file(smk.params.image, smk.params.png, smk.output.record, job,
                                   reuse=True, reuse_errors=True)
        except BaseException as e:  # no record (a full disk): the log says why, the job fails
            logger.exception("%s on %s: no record written: %s", job.label, smk.params.image, e)
            log_file.flush()
            raise
        logger.info("%s on %s: %s", job.label, smk.params.image, describe(record))


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
