"""Snakemake adapter of rule cnn_folder_network: train the folder network of ``cnn_folder`` on the
sampled images and write it with its record (cq.methods.cnn_folder.folder.Plan.train)."""

from cq.joblog import log_to


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        record = smk.params.plan.train(smk.output.network, smk.threads)
        logger.info("cnn_folder network: %d images, %d epochs on %s, surrogate %.2f -> %.2f, %.1f s",
                    len(record["images"]), record["epochs"], record["device"], record["loss_curve"][0],
                    record["loss_curve"][-1], record["wall_s"])


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
