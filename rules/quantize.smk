rule quantize:
    """Reduce one image to k colours by one method (a registered method or a variant)."""
    input:
        image=f"{INPUT_DIR}/{{image}}",
    output:
        # The JSON record is the commit point: cq writes it last and atomically, for a bad
        # image too (status "error", and then no PNG). So the record is the declared output
        # and the PNG's path is passed through params.
        record=f"{RESULTS}/{{method}}/{{image}}.json",
    log:
        f"{LOGS}/{{method}}/{{image}}.log",
    benchmark:
        f"{BENCHMARKS}/{{method}}/{{image}}.tsv"
    params:
        png=f"{RESULTS}/{{method}}/{{image}}.png",
        # The method's code version and resolved parameters: a change reruns that column only.
        job=get_job,
    threads: get_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu,
    conda:
        "../environment.yml"
    script:
        "../scripts/quantize.py"


# Shard mode (config shard_size): one job per (shard of images, method) instead.
include: "shards.smk"
