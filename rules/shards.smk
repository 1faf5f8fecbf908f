# Shard mode (config shard_size): one job per (shard of images, method) whose input is the
# shard's listing, not its images.


rule shard_listing:
    """The shard's images (cq.shards). A real run's start check writes every listing that is
    missing or other (cq.run.Run.start), so this job runs only in a dry run's plan or for a
    target asked for without that check."""
    output:
        listing=f"{RESULTS}/{SHARDS_FOLDER}/_images/{{shard}}.tsv",
    log: f"{LOGS}/{SHARDS_FOLDER}/_images/{{shard}}.log",
    params:
        images=lambda w: SHARDS[w.shard],
    localrule: True
    conda: "../environment.yml"
    script: "../scripts/shard_listing.py"


rule quantize_shard:
    """One method over a shard of images, each with its own PNG and record (cq.jobs.shard)."""
    input:
        listing=lambda w: listing_path(RESULTS, w.shard),
        network=CNN_FOLDER.input,
    output:
        manifest=f"{RESULTS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.tsv",
    log: f"{LOGS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.log",
    benchmark: f"{BENCHMARKS}/{SHARDS_FOLDER}/{{method}}/{{shard}}.tsv"
    params:
        spec=lambda w: json.dumps(METHODS[w.method]["spec"]),
        image_runtime=lambda w: METHODS[w.method]["runtime"],
        input_dir=lambda w: INPUT_DIR,
        results_dir=lambda w: RESULTS,
        cq=lambda w: CQ_JOBS,  # a function: a string would be a wildcard pattern
    threads: lambda w: METHODS[w.method]["threads"]
    resources:
        mem_mb=lambda w, attempt: scaled(METHODS[w.method]["mem_mb"], attempt),
        runtime=get_shard_runtime,
        gpu=lambda w: int(METHODS[w.method]["gpu"]),
    conda: "../environment.yml"
    shell:
        "{params.cq} shard --listing={input.listing:q} --manifest={output.manifest:q}"
        " --input-dir={params.input_dir:q} --results-dir={params.results_dir:q}"
        " --spec={params.spec:q} --runtime={params.image_runtime} --log={log:q}"
