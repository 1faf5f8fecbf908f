rule quantize_shard:
    """Shard mode (shard_size): one method over a shard of images. Each image gets the same
    PNG and JSON record as in rule quantize; records still valid are kept (scripts/quantize_shard.py)."""
    input:
        # The shard's listing (images, sizes, mtimes), rewritten by rules/common.smk only when
        # one of them is added, deleted or changed: one input per job, not one per image.
        listing=get_listing,
    output:
        # Written last and atomically: the shard's images, their records and statuses.
        manifest=f"{RESULTS}/shards/{{method}}/{{shard}}.tsv",
    log:
        f"{LOGS}/shards/{{method}}/{{shard}}.log",
    benchmark:
        f"{BENCHMARKS}/shards/{{method}}/{{shard}}.tsv"
    params:
        job=get_job,
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
