# The folder network of method cnn_folder (cq/methods/cnn_folder): one network trained on a sample
# of the folder (or of the folder named by cnn_folder_network.train_dir), an input of every
# cnn_folder job. Its path holds a hash of what shapes it (cq.methods.cnn_folder.folder), so it is
# trained again only when a sampled image or a training setting changes, never just by a new night.
# Include after rules/common.smk and before the rules whose input uses get_cnn_folder_network.

import cq.methods.cnn_folder.folder as cnn_folder_net

try:
    CNN_FOLDER_NETWORK = cnn_folder_net.plan(config, METHODS, INPUT_DIR, IMAGES, RESULTS,
                                             exclude=[RESULTS, LOGS, BENCHMARKS, ".snakemake"])
except ValueError as e:
    raise WorkflowError(f"config: {e}") from None

# The network file a cnn_folder column's jobs read (an input of rules quantize and quantize_shard).
get_cnn_folder_network = cnn_folder_net.input_function(METHODS)


if CNN_FOLDER_NETWORK:

    rule cnn_folder_network:
        """Train cnn_folder's network on the sampled images; its record says which, how long, where."""
        input:
            images=[os.path.join(CNN_FOLDER_NETWORK.folder, image) for image in CNN_FOLDER_NETWORK.sample],
        output:
            network=CNN_FOLDER_NETWORK.path,
            record=CNN_FOLDER_NETWORK.record,
        log:
            f"{LOGS}/{cnn_folder_net.FOLDER}/{CNN_FOLDER_NETWORK.log}",
        params:
            settings={k: v for k, v in CNN_FOLDER_NETWORK.settings.items() if k not in ("gpu", "mem_mb", "runtime")},
            k=config["k"],
            weights=config["weights"],
            read={"background": tuple(config["read"]["background"]) if config["read"]["background"] else None,
                  "max_pixels": config["read"]["max_pixels"]},
        threads: CNN_FOLDER_NETWORK.settings["threads"]
        resources:
            mem_mb=lambda wildcards, attempt: scaled(CNN_FOLDER_NETWORK.settings["mem_mb"], attempt),
            runtime=lambda wildcards, attempt: scaled(CNN_FOLDER_NETWORK.settings["runtime"], attempt),
            gpu=int(CNN_FOLDER_NETWORK.settings["gpu"]),
        conda:
            "../environment.yml"
        script:
            "../scripts/train_cnn_folder.py"
