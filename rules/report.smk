rule report:
    """Collect every record into the comparison table (CSV) and page (HTML)."""
    input:
        # One job per (image, method): every record; shard mode: every shard's manifest,
        # which names its records.
        records=get_records,
        manifests=get_manifests,
    output:
        csv=f"{RESULTS}/report.csv",
        html=f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    params:
        input_dir=INPUT_DIR,
        methods=list(METHODS),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../environment.yml"
    script:
        "../scripts/report.py"
