"""Snakemake adapter of rule report: every record and the run history -> cq.report.build_report.

The records are the rule's inputs or, in shard mode, named by the shards' manifests (one
line per image). A record that cannot be read (corrupt or truncated JSON) does not stop the
report: it is listed as an error of its (image, method), named from its path.
"""

import logging
import os
import sys

from cq.discover import image_of_result
from cq.history import load_history
from cq.record import RecordError, read_record
from cq.report import build_report
from cq.shards import manifest_records


def load(path: str, results_dir: str, input_dir: str) -> dict:
    """The record at ``path``, or an error stub naming the image and method it stands for."""
    try:
        return read_record(path)
    except RecordError as e:
        logging.getLogger("cq").warning("%s", e)
        method, image = image_of_result(results_dir, path)
        return {"status": "error", "error": str(e), "method": method,
                "image": {"path": f"{input_dir}/{image}"}}


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        sys.stderr = log_file
        logging.basicConfig(stream=log_file, level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # The CSV lies in the results folder: {results_dir}/report.csv.
        results_dir, input_dir = os.path.dirname(smk.output.csv) or ".", smk.params.input_dir
        paths = list(smk.input.records) + manifest_records(smk.input.manifests)
        records = [load(path, results_dir, input_dir) for path in paths]
        # The history file is a declared input: {results_dir}/history.jsonl (cq.history's format).
        history = load_history(os.path.dirname(smk.input.history)) if smk.input.history else []
        build_report(records, results_dir, input_dir, smk.output.csv, smk.output.html,
                     summary_path=smk.output.summary, history=history, skipped=list(smk.params.skipped),
                     method_order=list(smk.params.methods))
        logging.getLogger("cq").info("report of %d records, %d runs of history", len(records), len(history))


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
