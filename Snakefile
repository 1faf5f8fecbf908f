# cq: reduce every image of a folder to exactly k colours by several methods, and report
# which did best. Configure in config/config.yaml; runtime settings in profiles/default/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/quantize.smk"
include: "rules/shards.smk"
include: "rules/report.smk"
include: "rules/run.smk"


rule all:
    input:
        get_final_output,
    default_target: True
