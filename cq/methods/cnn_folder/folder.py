"""The workflow's side of the folder network: which images it learns from, where its file lives,
and one training run over files that writes the network and its record.

The sample is the ``sample`` images whose path hashes lowest: stable as a folder grows (a new
image enters only if its hash is among the lowest). The network's folder is named by a hash of
everything that shapes it (training settings, k, weights, training code version, and each sampled
file's path, size and modification time), so a change of any gives a new network (and new
per-image records, whose parameters name it) and an unchanged folder never retrains.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass

import numpy as np

from cq.objective import Weights

log = logging.getLogger(__name__)

TRAIN_VERSION = "1"
SETTINGS = {"train_dir": None, "sample": 200, "max_side": 512, "epochs": 30, "batch": 16, "lr": 3e-3,
            "seed": 0, "device": "auto", "gpu": False, "threads": 2, "mem_mb": 4000, "runtime": 120}
JOB_SETTINGS = ("gpu", "threads", "mem_mb", "runtime", "device")  # where it runs, not what it learns
FOLDER = "_cnn_folder"


def settings(section: dict | None) -> dict:
    """The config section ``cnn_folder_network`` over its defaults; an unknown key is a ValueError."""
    section = dict(section or {})
    unknown = sorted(set(section) - set(SETTINGS))
    if unknown:
        raise ValueError(f"cnn_folder_network: unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    return {**SETTINGS, **section}


def choose_sample(images, n: int) -> list[str]:
    """The ``n`` images (relative paths) whose sha256 of the path is lowest, in path order."""
    ranked = sorted(images, key=lambda p: hashlib.sha256(p.encode("utf-8")).hexdigest())
    return sorted(ranked[:n])


def network_id(conf: dict, k: int, weights: dict, listing: str) -> str:
    """A short hash of what shapes the network: settings (not where it runs), k, weights, the
    training code's version and the sample's listing (paths, sizes, mtimes)."""
    learned = {key: value for key, value in conf.items() if key not in JOB_SETTINGS}
    text = json.dumps({"settings": learned, "k": int(k), "weights": {a: float(b) for a, b in weights.items()},
                       "version": TRAIN_VERSION, "listing": listing}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def network_path(results_dir: str, ident: str) -> str:
    return os.path.join(results_dir, FOLDER, ident, "network.pt")


@dataclass(frozen=True)
class Plan:
    """The workflow's folder network: settings, the folder sampled, the sampled images, its file."""

    settings: dict
    folder: str
    sample: list
    path: str

    @property
    def record(self) -> str:
        return os.path.join(os.path.dirname(self.path), "network.json")

    @property
    def log(self) -> str:
        return os.path.basename(os.path.dirname(self.path)) + ".log"


def plan(config: dict, methods: dict, input_dir: str, images, results_dir: str, exclude=()) -> Plan | None:
    """The network the workflow trains, or None when no cnn_folder column needs it (every one names
    its own file). Fills the network's path into those columns' job specs (``methods``, as
    ``cq.methods.resolve`` gives them), so their records name it. A bad setting is a ValueError."""
    from cq.discover import discover
    from cq.shards import shard_listing

    columns = [e for e in methods.values() if e["spec"]["method"] == "cnn_folder" and not e["spec"]["params"]["network"]]
    if not columns:
        return None
    conf = settings(config.get("cnn_folder_network"))
    folder = input_dir
    if conf["train_dir"]:
        folder = os.path.normpath(conf["train_dir"])
        if not os.path.isdir(folder):
            raise ValueError(f"cnn_folder_network.train_dir {folder!r} is not a folder")
        images = discover(folder, config["extensions"], exclude=list(exclude)).images
    sample = choose_sample(images, conf["sample"])
    if not sample:
        raise ValueError(f"cnn_folder_network: no images to train on under {folder!r}")
    spec = columns[0]["spec"]
    path = network_path(results_dir, network_id(conf, spec["k"], spec["weights"], shard_listing(folder, sample)))
    for entry in columns:
        entry["spec"]["params"]["network"] = path
    return Plan(conf, folder, sample, path)


def input_function(methods: dict):
    """The workflow's input function of a job: the network file its cnn_folder column reads (none
    for other methods)."""

    def network(wildcards) -> list[str]:
        spec = methods[wildcards.method]["spec"]
        return [spec["params"]["network"]] if spec["method"] == "cnn_folder" else []

    return network


def _downscaled(pixels: np.ndarray, longest: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(pixels)
    scale = longest / max(image.size)
    if scale >= 1:
        return pixels
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def train_files(paths, network: str, record_path: str, conf: dict, k: int, weights: Weights, read=None) -> dict:
    """Train the folder network on the image files ``paths`` (each downscaled to ``max_side``);
    write the network and its JSON record (atomically) and return the record. An unreadable
    image is skipped and named in the record; none readable is a ValueError."""
    from cq.fsutil import atomic_write_bytes, file_sha256
    from cq.imageio import ImageError, load_image
    from cq.methods.cnn_folder.method import resolve_device
    from cq.methods.cnn_folder.network import Shape
    from cq.methods.cnn_folder.train import TrainConfig, prepare, save, train
    from cq.record import now, versions

    read = read or {}
    t0 = time.perf_counter()
    images, used, skipped = [], [], []
    for path in paths:
        try:
            loaded = load_image(path, **read)
        except (ImageError, OSError) as e:
            skipped.append({"path": str(path), "error": str(e).splitlines()[0]})
            continue
        if loaded.pixels.shape[0] * loaded.pixels.shape[1] < k:
            skipped.append({"path": str(path), "error": f"fewer than k={k} pixels"})
            continue
        images.append(_downscaled(loaded.pixels, conf["max_side"]))
        used.append({"path": str(path), "sha256": file_sha256(path)})
    if not images:
        raise ValueError(f"cnn_folder_network: none of the {len(paths)} sampled images could be read")
    shape = Shape(k)
    config = TrainConfig(epochs=conf["epochs"], batch=conf["batch"], lr=conf["lr"], seed=conf["seed"],
                         threads=conf["threads"])
    device = resolve_device(conf["device"])
    samples = prepare(images, shape, config.bits, weights)
    net, facts = train(samples, shape, weights, config, device)
    save(network, net, weights)
    record = {"network": os.path.basename(network), "images": used, "skipped": skipped, **facts,
              "prepare_and_read_s": time.perf_counter() - t0 - facts["wall_s"], "settings": conf, "k": k,
              "created": now(), "versions": versions()}
    text = json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(record_path, (text + "\n").encode())
    return record
