rule report:
    """Collect every record into the comparison table (CSV), the per-method summary (TSV) and
    the page (HTML); the summary and table also go into `snakemake --report`."""
    input:
        # One job per (image, method): every record; shard mode: every shard's manifest,
        # which names its records.
        records=get_records,
        manifests=get_manifests,
        history=get_history,
    # One short line instead of Snakemake's listing of every record path (inputs and reason).
    message:
        "cq: building the report of {params.n_results} results: {output.html}"
    output:
        csv=report(f"{RESULTS}/report.csv", caption="../report/results.rst", category="Results"),
        summary=report(f"{RESULTS}/summary.tsv", caption="../report/summary.rst", category="Summary"),
        html=f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    params:
        n_results=len(METHODS) * len(IMAGES),
        input_dir=INPUT_DIR,
        methods=list(METHODS),
        # What discovery left out (symlink loops, links out of the folder): listed on the page.
        skipped=DISCOVERY.warnings,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../environment.yml"
    script:
        "../scripts/report.py"
