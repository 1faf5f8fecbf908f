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

TRAIN_VERSION = "2"  # 2: JPEGs decoded at reduced scale (never below max_side)
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
    """The workflow's folder network: its settings, the folder sampled and the sampled images, its
    file, the columns whose jobs read it, their k, weights and read options, and where the rule's
    outputs and logs go."""

    settings: dict
    folder: str
    sample: list
    path: str
    columns: tuple
    spec: dict
    results_dir: str
    logs_dir: str

    @property
    def record(self) -> str:
        return os.path.join(os.path.dirname(self.path), "network.json")

    @property
    def output(self) -> str:
        """The rule's output pattern: its one wildcard is the network's identity, a hex hash."""
        return f"{self.results_dir}/{FOLDER}/{{ident}}/network.pt"

    @property
    def log(self) -> str:
        return f"{self.logs_dir}/{FOLDER}/{{ident}}.log"

    @property
    def threads(self) -> int:
        return self.settings["threads"]

    @property
    def resources(self) -> dict:
        """The training job's memory and minutes, and a GPU when ``gpu`` is set."""
        return {"mem_mb": self.settings["mem_mb"], "runtime": self.settings["runtime"], "gpu": int(self.settings["gpu"])}

    def input(self, wildcards) -> list[str]:
        """The workflow's input function of a quantize job: the network, for the columns that read it."""
        return [self.path] if wildcards.method in self.columns else []

    def train(self, network: str, threads: int) -> dict:
        """Train the network into ``network`` (the rule's output) on ``threads``, with its record."""
        return train_files([os.path.join(self.folder, image) for image in self.sample], network, self.record,
                           {**self.settings, "threads": threads}, self.spec["k"], Weights(**self.spec["weights"]),
                           self.spec["read"])


def plan(config: dict, methods: dict, input_dir: str, images, results_dir: str, logs_dir: str = "logs",
         exclude=()) -> Plan:
    """The network the workflow trains. Fills its path into the job specs of the cnn_folder columns
    (``methods``, as ``cq.config`` resolves them) that name no file of their own, so that their
    records name it (and go stale with it); with no such column, a plan no job reads. A bad
    setting is a ValueError."""
    from cq.discover import discover

    conf = settings(config.get("cnn_folder_network"))
    columns = [label for label, e in methods.items()
               if e["spec"]["method"] == "cnn_folder" and not e["spec"]["params"]["network"]]
    if not columns:
        return Plan(conf, input_dir, [], "", (), {}, results_dir, logs_dir)
    folder = input_dir
    if conf["train_dir"]:
        folder = os.path.normpath(conf["train_dir"])
        if not os.path.isdir(folder):
            raise ValueError(f"cnn_folder_network.train_dir {folder!r} is not a folder")
        images = discover(folder, config["extensions"], exclude=list(exclude)).images
    sample = choose_sample(images, conf["sample"])
    if conf["train_dir"] and not sample:
        raise ValueError(f"cnn_folder_network: no images to train on under {folder!r}")
    spec = methods[columns[0]]["spec"]
    path = network_path(results_dir, network_id(conf, spec["k"], spec["weights"], listing(folder, sample)))
    for label in columns:
        methods[label]["spec"]["params"]["network"] = path
    return Plan(conf, folder, sample, path, tuple(columns), {key: spec[key] for key in ("k", "weights", "read")},
                results_dir, logs_dir)


def listing(folder: str, sample) -> str:
    """The sample as text, one image a line: path, size and modification time (a file gone reads
    as ``-1``), so that a changed image changes the network's identity."""
    lines = []
    for image in sample:
        try:
            st = os.stat(os.path.join(folder, image))
            lines.append(f"{image}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            lines.append(f"{image}\t-1\t-1")
    return "".join(line + "\n" for line in lines)


def workflow_plan(config: dict, resolved, images) -> Plan:
    """:func:`plan` for the workflow's ``resolved`` settings (cq.config.Settings) and discovered
    ``images``; a bad setting is a one-line ConfigError."""
    from cq.config import ConfigError

    s = resolved
    try:
        return plan(config, s.methods, s.input_dir, images, s.results_dir, s.logs_dir,
                    exclude=[s.results_dir, s.logs_dir, s.benchmarks_dir, ".snakemake"])
    except ValueError as e:
        raise ConfigError(f"config: {e}") from None


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
    write its JSON record, then the network (the commit point; both atomically) and return the
    record. An unreadable image is skipped and named in the record; none readable is a ValueError."""
    from cq.fsutil import atomic_write_bytes, file_sha256
    from cq.imageio import ImageError, load_image
    from cq.methods.cnn_folder.method import resolve_device
    from cq.methods.cnn_folder.network import Shape
    from cq.methods.cnn_folder.train import TrainConfig, prepare, save, train
    from cq.record import now, versions

    read = dict(read or {})
    if read.get("background") is not None:
        read["background"] = tuple(read["background"])
    t0 = time.perf_counter()
    images, used, skipped = [], [], []
    for path in paths:
        try:
            loaded = load_image(path, **read, preview=conf["max_side"])  # shrunk below anyway
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
    record = {"network": os.path.basename(network), "images": used, "skipped": skipped, **facts,
              "prepare_and_read_s": time.perf_counter() - t0 - facts["wall_s"], "settings": conf, "k": k,
              "created": now(), "versions": versions()}
    text = json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False)
    atomic_write_bytes(record_path, (text + "\n").encode())
    save(network, net, weights)
    return record
