"""The workflow's job commands: ``python -m cq.jobs quantize|shard ...``, what rules quantize
and quantize_shard run.

Shell commands rather than Snakemake ``script:`` jobs: a script job's preamble imports Snakemake
to unpickle its arguments, about 0.15 CPU s a job, as much as a fast method spends on a photo.
Here the arguments come on the command line (the job spec as JSON), and each job writes its own
log. A bad image or a failing method gives a record with status "error" and the job succeeds;
a record that cannot be written at all (a full disk) fails the job, its log saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# One OpenBLAS thread unless the caller chose one, before numpy loads (as the `cq` command).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cq.config import time_limit_s  # noqa: E402 (after the BLAS setting)
from cq.joblog import log_to  # noqa: E402


def quantize(args) -> int:
    """One (image, method): its PNG and record (cq.pipeline.quantize_file); a current record
    (cq.freshness) is kept. The job's runtime (minutes) bounds the work on the image, less a
    margin (cq.config.time_limit_s), so an overrun is recorded before a scheduler's kill."""
    from cq.pipeline import Job, quantize_file
    from cq.record import describe

    with open(args.log, "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        job = Job.from_spec(args.spec, time_limit_s=time_limit_s(args.runtime))
        try:
            record = quantize_file(args.image, args.png, args.record, job, reuse=True, reuse_errors=True)
        except BaseException as e:  # no record: the log says why, the job fails
            logger.exception("%s on %s: no record written: %s", job.label, args.image, e)
            return 1
        logger.info("%s on %s: %s", job.label, args.image, describe(record))
    return 0


def shard(args) -> int:
    """One method over a shard's listing (cq.shards.run_shard: the keep policy, the records,
    then the manifest). If a record could not be written, the other images are still done, then
    the job fails without a manifest, and the next run redoes only what is missing."""
    from cq.shards import run_shard

    with open(args.log, "w", encoding="utf-8") as log_file:
        log_to(log_file)
        failed = run_shard(args.listing, args.manifest, args.input_dir, args.results_dir, args.spec,
                           time_limit_s(args.runtime))
    if failed:  # the log says which; Snakemake's terminal says where
        print(f"{len(failed)} record(s) of {args.manifest} could not be written, first: {failed[0]}",
              file=sys.__stderr__)
        return 1
    return 0


def _parser() -> argparse.ArgumentParser:
    """Every path as ``--name=PATH`` in the rules, so that a name starting with "-" stays a value."""
    p = argparse.ArgumentParser(prog="python -m cq.jobs", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="one image, one method")
    q.add_argument("--image", required=True)
    q.add_argument("--png", required=True)
    q.add_argument("--record", required=True)
    s = sub.add_parser("shard", help="one shard of images, one method")
    s.add_argument("--listing", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--input-dir", required=True)
    s.add_argument("--results-dir", required=True)
    for each in (q, s):
        each.add_argument("--spec", type=json.loads, required=True, help="the job spec (cq.config), JSON")
        each.add_argument("--runtime", type=float, required=True, help="minutes for one image")
        each.add_argument("--log", required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return {"quantize": quantize, "shard": shard}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
