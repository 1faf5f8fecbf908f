"""Snakemake adapter of rule cnn_folder_network: train the folder network of ``cnn_folder`` on the
sampled images and write it with its record (cq.methods.cnn_folder.folder.train_files)."""

from cq.joblog import log_to
from cq.methods.cnn_folder.folder import train_files
from cq.objective import Weights


def main(smk) -> None:
    with open(smk.log[0], "w", encoding="utf-8") as log_file:
        logger = log_to(log_file)
        conf = {**smk.params.settings, "threads": smk.threads}
        record = train_files(list(smk.input.images), smk.output.network, smk.output.record, conf,
                             smk.params.k, Weights(**smk.params.weights), smk.params.read)
        logger.info("cnn_folder network: %d images, %d epochs on %s, surrogate %.2f -> %.2f, %.1f s",
                    len(record["images"]), record["epochs"], record["device"], record["loss_curve"][0],
                    record["loss_curve"][-1], record["wall_s"])


main(snakemake)  # noqa: F821 (the object Snakemake passes to scripts)
