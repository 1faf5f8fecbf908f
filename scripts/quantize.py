"""Snakemake adapter of rule quantize: one (image, method) job -> cq.pipeline.quantize_file.

A bad image or a failing method gives a record with status "error" and the job still
succeeds, so the report gets built. The job's runtime resource (minutes, grown with the
attempt) bounds the work on the image, less a margin (cq.methods.time_limit_s), so that an
overrun is recorded before a scheduler kills the job at its wall time.
"""

from cq.joblog import log_to
from cq.methods import time_limit_s
from cq.pipeline import Job, quantize_file
from cq.shards import outcome


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        job = Job.from_spec(smk.params.spec, time_limit_s=time_limit_s(smk.resources.runtime))
        record = quantize_file(smk.input.image, smk.params.png, smk.output.record, job)
        logger.info("%s on %s: %s", job.label, smk.input.image, outcome(record))


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
