def get_history(wildcards):
    """The run history that the report shows: the finished runs of ``{RESULTS}/history.jsonl``.

    Declared ancient: the run's own line is appended when it ends (onsuccess), after the
    report, and must not make the report outdated. Snakemake has no optional input, so a real
    run (never a dry run) creates the file empty when missing: the report's set of inputs is
    then the same from the first run on, and a second run has nothing to do.
    """
    path = f"{RESULTS}/history.jsonl"
    if not os.path.exists(path) and workflow.is_main_process and not workflow.dryrun:
        os.makedirs(RESULTS, exist_ok=True)
        open(path, "a").close()
    return ancient(path) if os.path.exists(path) else []


rule report:
    """Collect every record into the comparison table (CSV), the per-method summary (TSV) and
    the page (HTML); the summary and table also go into `snakemake --report`."""
    input:
        # One job per (image, method): every record; shard mode: every shard's manifest,
        # which names its records.
        records=get_records,
        manifests=get_manifests,
        history=get_history,
    output:
        csv=report(f"{RESULTS}/report.csv", caption="../report/results.rst", category="Results"),
        summary=report(f"{RESULTS}/summary.tsv", caption="../report/summary.rst", category="Summary"),
        html=f"{RESULTS}/report.html",
    log:
        f"{LOGS}/report.log",
    benchmark:
        f"{BENCHMARKS}/report.tsv"
    params:
        input_dir=INPUT_DIR,
        methods=list(METHODS),
        # What discovery left out (symlink loops, links out of the folder): listed on the page.
        skipped=lambda wildcards: _skipped(),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../environment.yml"
    script:
        "../scripts/report.py"
