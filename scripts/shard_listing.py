"""Snakemake adapter of rule shard_listing: the shard's images -> its listing
(cq.shards.write_listing, which leaves a listing that already holds them untouched). A real
run's start check (cq.run.Run.start) writes them first; this job is the rule's fallback.

A script, not a ``run:`` block: Snakemake spawns a ``run:`` job as a second Snakemake process
that parses the whole workflow again (about 2 s of CPU per shard)."""

from cq.shards import write_listing

write_listing(snakemake.output.listing, snakemake.params.images)  # noqa: F821 (the object Snakemake passes to scripts)
