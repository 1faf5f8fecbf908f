rule quantize:
    """Reduce one image to k colours by one method (a registered method or a variant)."""
    input:
        image=get_image,
        network=get_cnn_folder_network,
    output:
        # The JSON record is the commit point: cq writes it last and atomically, for a bad
        # image too (status "error", and then no PNG). So the record is the declared output
        # and the PNG's path is passed through params.
        record=f"{RESULTS}/{{method}}/{{key}}.json",
    log:
        f"{LOGS}/{{method}}/{{key}}.log",
    benchmark:
        f"{BENCHMARKS}/{{method}}/{{key}}.tsv"
    params:
        png=f"{RESULTS}/{{method}}/{{key}}.png",
        spec=get_spec,
    threads: get_threads
    resources:
        mem_mb=get_mem_mb,
        runtime=get_runtime,
        gpu=get_gpu,
    conda:
        "../environment.yml"
    script:
        "../scripts/quantize.py"
