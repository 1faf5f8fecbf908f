rule cnn_folder_network:
    """Train cnn_folder's network, an input of its jobs, on the folder's sample; named by a hash of
    its sample and settings, it is trained again only when they change (cq.methods.cnn_folder.folder)."""
    output: network=CNN_FOLDER.output
    log: CNN_FOLDER.log
    params: plan=lambda w: CNN_FOLDER
    threads: CNN_FOLDER.threads
    resources: **CNN_FOLDER.resources
    conda: "../environment.yml"
    script: "../scripts/train_cnn_folder.py"
