rule quantize:
    """Reduce one image to k colours by one method (a registered method or a variant). The
    image is a params function, not an input: its name never meets Snakemake's parsers, and
    whether the result is current is the record's to say (cq.run.Run.start). A bad image or a
    failing method gives an error record and the job succeeds (cq.jobs.quantize)."""
    input:
        network=CNN_FOLDER.input,
    output:
        # The record is the commit point: written last and atomically, for a bad image too.
        record=f"{RESULTS}/{{method}}/{{key}}.json",
    log: f"{LOGS}/{{method}}/{{key}}.log",
    benchmark: f"{BENCHMARKS}/{{method}}/{{key}}.tsv"
    params:
        image=lambda w: f"{INPUT_DIR}/{IMAGE_OF_KEY[w.key]}",
        png=f"{RESULTS}/{{method}}/{{key}}.png",
        spec=lambda w: json.dumps(METHODS[w.method]["spec"]),
        cq=lambda w: CQ_JOBS,  # a function: a string would be a wildcard pattern
    threads: lambda w: METHODS[w.method]["threads"]
    resources:
        mem_mb=lambda w, attempt: scaled(METHODS[w.method]["mem_mb"], attempt),
        runtime=lambda w, attempt: scaled(METHODS[w.method]["runtime"], attempt),
        gpu=lambda w: int(METHODS[w.method]["gpu"]),
    conda: "../environment.yml"
    shell:
        "{params.cq} quantize --image={params.image:q} --png={params.png:q} --record={output.record:q}"
        " --spec={params.spec:q} --runtime={resources.runtime} --log={log:q}"
