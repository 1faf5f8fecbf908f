"""Snakemake adapter of rule quantize_shard: one method over one shard of images
(cq.shards.run_shard: the keep policy, the records, then the manifest).

If a record could not be written at all (a full disk), the other images are still done, then
the job fails without a manifest, and the next run redoes only what is missing.
"""

import sys

from cq.config import time_limit_s
from cq.joblog import log_to
from cq.shards import run_shard


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        log_to(log_file)
        failed = run_shard(smk.input.listing, smk.output.manifest, smk.params.input_dir, smk.params.results_dir,
                           smk.params.spec, time_limit_s(smk.params.image_runtime))
    if failed:  # the log says which; Snakemake's own stderr says where
        print(f"{len(failed)} record(s) of {smk.output.manifest} could not be written, first: {failed[0]}",
              file=sys.__stderr__)
        sys.exit(1)


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
