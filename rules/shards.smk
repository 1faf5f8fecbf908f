# Shard mode (config shard_size; "Large folders" in the README): one job per (shard of images,
# method) whose input is the shard's listing, not its images.


rule shard_listing:
    """The shard's images with their sizes and mtimes (cq.shards): rerun, and the listing
    rewritten, only when the hash of what it would hold now (a parameter) changes."""
    output:
        listing=f"{RESULTS}/{SHARDS_FOLDER}/_images/{{shard}}.tsv",
    log:
        f"{LOGS}/{SHARDS_FOLDER}/_images/{{shard}}.log",
    params:
        digest=get_listing_digest,
    localrule: True
    run:
        write_listing(output.listing, INPUT_DIR, SHARDS[wildcards.shard])


rule quantize_shard:
    """One method over a shard of images. Each image gets the same PNG and JSON record as in
    rule quantize; records still valid are kept (cq.shards.run_shard)."""
    input:
        listing=get_listing,
        network=get_cnn_folder_network,
    output:
        # Written last and atomically: the shard's images, their records and statuses.
        manifest=f"{RESULTS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.tsv",
    log:
        f"{LOGS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.tsv"
    params:
        spec=get_spec,
        image_runtime=get_image_runtime,
        input_dir=INPUT_DIR,
    threads: get_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_shard_runtime,
        gpu=get_gpu,
    conda:
        "../environment.yml"
    script:
        "../scripts/quantize_shard.py"
