rule quantize:
    """Reduce one image to k colours by one method (a registered method or a variant). The
    image is a params function, not an input: its name never meets Snakemake's parsers, and
    whether the result is current is the record's to say (cq.run.Run.start)."""
    output:
        # The record is the commit point: written last and atomically, for a bad image too.
        record=f"{RESULTS}/{{method}}/{{key}}.json",
    log:
        f"{LOGS}/{{method}}/{{key}}.log",
    benchmark:
        f"{BENCHMARKS}/{{method}}/{{key}}.tsv"
    params:
        image=get_image,
        png=f"{RESULTS}/{{method}}/{{key}}.png",
        spec=get_spec,
    threads: lambda w: METHODS[w.method]["threads"]
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=lambda w: int(METHODS[w.method]["gpu"]),
    conda:
        "../environment.yml"
    script:
        "../scripts/quantize.py"
