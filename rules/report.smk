rule report:
    """Every record into the comparison table (CSV), the per-method summary (TSV) and the page."""
    input:
        # Every record, or in shard mode every manifest; the history file, when there is one,
        # is ancient: the run's own line is appended after the report.
        records=get_records,
        history=lambda w: ancient(f"{RESULTS}/history.jsonl") if os.path.exists(f"{RESULTS}/history.jsonl") else [],
    message: "cq: building the report of {params.n_results} results: {output.html}"
    output:
        csv=report(f"{RESULTS}/report.csv", caption="../report/results.rst", category="Results"),
        summary=report(f"{RESULTS}/summary.tsv", caption="../report/summary.rst", category="Summary"),
        html=f"{RESULTS}/report.html",
        best=report(directory(f"{RESULTS}/report_best"), patterns=["{method,[^/]+}/{image}.png"],
                    caption="../report/best.rst", category="Best result per image",
                    labels={"image": "{image}", "method": "{method}"}),
    log: f"{LOGS}/report.log",
    benchmark: f"{BENCHMARKS}/report.tsv"
    params:
        # Functions: their values (file names, discovery's warnings) are never parsed.
        n_results=len(METHODS) * len(IMAGES),
        results_dir=lambda w: RESULTS,
        input_dir=lambda w: INPUT_DIR,
        images=lambda w: IMAGES,
        methods=lambda w: list(METHODS),
        skipped=lambda w: RUN.found.warnings,
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda: "../environment.yml"
    script: "../scripts/report.py"
