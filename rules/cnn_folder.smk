# The folder network of method cnn_folder (cq/methods/cnn_folder): one network trained on a sample
# of the folder (or of the folder named by cnn_folder_network.train_dir), consumed by every
# cnn_folder job. Its path holds a hash of what shapes it (cq.methods.cnn_folder.folder), so it is
# trained again only when a sampled image or a training setting changes, never just by a new night.
# Include after rules/common.smk and before the rules whose input uses get_cnn_folder_network.

import cq.methods.cnn_folder.folder as cnn_folder_net
from cq.shards import shard_listing


def _cnn_folder_network():
    """(settings, sample folder, sampled images, network path), or None without a cnn_folder column
    that needs the workflow's network."""
    columns = [e for e in METHODS.values() if e["spec"]["method"] == "cnn_folder" and not e["spec"]["params"]["network"]]
    if not columns:
        return None
    try:
        conf = cnn_folder_net.settings(config.get("cnn_folder_network"))
    except ValueError as e:
        raise WorkflowError(f"config: {e}") from None
    folder, images = INPUT_DIR, IMAGES
    if conf["train_dir"]:
        folder = os.path.normpath(conf["train_dir"])
        if not os.path.isdir(folder):
            raise WorkflowError(f"config: cnn_folder_network.train_dir {folder!r} is not a folder")
        images = discover(folder, config["extensions"], exclude=[RESULTS, LOGS, BENCHMARKS, ".snakemake"]).images
    sample = cnn_folder_net.choose_sample(images, conf["sample"])
    if not sample:
        raise WorkflowError(f"config: cnn_folder_network: no images to train on under {folder!r}")
    spec = columns[0]["spec"]
    ident = cnn_folder_net.network_id(conf, spec["k"], spec["weights"], shard_listing(folder, sample))
    path = cnn_folder_net.network_path(RESULTS, ident)
    for entry in columns:  # the jobs' parameters name the network: a new network, new records
        entry["spec"]["params"]["network"] = path
    return conf, folder, sample, path


CNN_FOLDER_NETWORK = _cnn_folder_network()


def get_cnn_folder_network(wildcards):
    """The network file a cnn_folder column's jobs read (an input of theirs); none for other methods."""
    spec = METHODS[wildcards.method]["spec"]
    return [spec["params"]["network"]] if spec["method"] == "cnn_folder" else []


if CNN_FOLDER_NETWORK:

    rule cnn_folder_network:
        """Train cnn_folder's network on the sampled images; its record says which, how long, where."""
        input:
            images=[os.path.join(CNN_FOLDER_NETWORK[1], image) for image in CNN_FOLDER_NETWORK[2]],
        output:
            network=CNN_FOLDER_NETWORK[3],
            record=os.path.join(os.path.dirname(CNN_FOLDER_NETWORK[3]), "network.json"),
        log:
            f"{LOGS}/{cnn_folder_net.FOLDER}/{os.path.basename(os.path.dirname(CNN_FOLDER_NETWORK[3]))}.log",
        params:
            settings={k: v for k, v in CNN_FOLDER_NETWORK[0].items() if k not in ("gpu", "mem_mb", "runtime")},
            k=config["k"],
            weights=config["weights"],
            read={"background": tuple(config["read"]["background"]) if config["read"]["background"] else None,
                  "max_pixels": config["read"]["max_pixels"]},
        threads: CNN_FOLDER_NETWORK[0]["threads"]
        resources:
            mem_mb=lambda wildcards, attempt: scaled(CNN_FOLDER_NETWORK[0]["mem_mb"], attempt),
            runtime=lambda wildcards, attempt: scaled(CNN_FOLDER_NETWORK[0]["runtime"], attempt),
            gpu=int(CNN_FOLDER_NETWORK[0]["gpu"]),
        conda:
            "../environment.yml"
        script:
            "../scripts/train_cnn_folder.py"
