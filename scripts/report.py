"""Snakemake adapter of rule report: every record and the run history -> the report
(cq.outcome.write_report, the same builder the end-of-run hook uses). A record that cannot be
read is listed as an error of its (image, method)."""

import logging
import sys

from cq.outcome import write_report


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        sys.stderr = log_file
        logging.basicConfig(stream=log_file, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        n = write_report(smk.params.results_dir, smk.params.input_dir, smk.params.images, smk.params.methods,
                         skipped=smk.params.skipped, csv_path=smk.output.csv, html_path=smk.output.html,
                         summary_path=smk.output.summary)
        logging.getLogger("cq").info("report of %d records", n)


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
