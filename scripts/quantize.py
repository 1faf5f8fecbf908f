"""Snakemake adapter of rule quantize: one (image, method) job -> cq.pipeline.quantize_file.

A bad image or a failing method gives a record with status "error" and this script exits 0,
so the report still gets built. cq's log messages (INFO, e.g. cnn training progress) and
anything written to stderr go to the job's log file.
"""

import logging
import sys

from cq.objective import Weights
from cq.pipeline import Job, ReadOptions, quantize_file


def make_job(spec: dict) -> Job:
    """The pipeline's Job from the rule's ``params.job`` (built by rules/common.smk)."""
    read = spec["read"]
    background = read["background"]
    return Job(
        method=spec["method"],
        params=spec["params"],
        k=spec["k"],
        weights=Weights(**spec["weights"]),
        name=spec["name"],
        read=ReadOptions(tuple(background) if background else None, read["max_pixels"]),
    )


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        sys.stderr = log_file
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("cq")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").addHandler(handler)
        record = quantize_file(smk.input.image, smk.params.png, smk.output.record, make_job(smk.params.job))
        logger.info("%s on %s: %s %s", record["method"], smk.input.image, record["status"],
                    record["error"] or f"score {record['scores']['score']:.2f}")


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
