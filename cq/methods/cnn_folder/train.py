"""Training the folder network over many images, and its file.

One network for a whole folder (or a sample of it): minibatches of images, Adam, the objective's
differentiable surrogate (``cq.palette_net.surrogate_loss``: each colour's soft minimum over the
capped palette of its per-pixel objective, plus ``w_max * T``) at a temperature annealed over the
epochs, on each image's ``bits``-bit binned colours. The file holds the weights and the shape;
the record (JSON) says which images, how many epochs, the loss curve, the time and the device.
"""

from __future__ import annotations

import io
import logging
import resource
import time
from dataclasses import asdict, dataclass

import numpy as np

from cq.histogram import ColorHistogram
from cq.methods.cnn_folder.features import features, surrogate_points
from cq.objective import Weights

log = logging.getLogger(__name__)

FORMAT = "cq.cnn_folder.network/1"


@dataclass(frozen=True)
class TrainConfig:
    """How the folder network is trained (see :func:`train`)."""

    epochs: int = 60
    """Passes over the sample."""
    batch: int = 16
    """Images per optimiser step."""
    lr: float = 3e-3
    """Adam's step size."""
    tau: tuple[float, float] = (10.0, 1.0)
    """The surrogate's soft-assignment temperature, annealed from the first to the second."""
    bits: int = 4
    """The surrogate's colours: each image's histogram binned to this many bits per channel."""
    seed: int = 0
    threads: int = 2
    constant_input: bool = False
    """The ablation: every image's input replaced by one constant (the features must matter)."""


@dataclass
class Sample:
    """One training image, prepared once: network inputs and the surrogate's weighted colours."""

    features: object
    points: np.ndarray
    mass: np.ndarray


def prepare(images, shape, bits: int, weights: Weights = Weights()) -> list[Sample]:
    """Every image (RGB uint8 arrays) as a training Sample."""
    out = []
    for image in images:
        hist = ColorHistogram.from_image(np.ascontiguousarray(image[:, :, :3]), with_inverse=False)
        out.append(Sample(features(image, hist, shape.input_size, shape.bin_bits, weights), *surrogate_points(hist, bits)))
    return out


def anchors(samples, k: int, seed: int) -> np.ndarray:
    """The head's anchors: weighted k-means++ over every image's colours, pooled."""
    from cq.descent import kmeans_plusplus

    points = np.concatenate([s.points for s in samples])
    mass = np.concatenate([s.mass for s in samples])
    return kmeans_plusplus(points, k, mass, np.random.default_rng(seed))


def _batch_tensors(batch, device):
    """Network inputs and padded surrogate colours of a list of Samples."""
    import torch

    from cq.methods.cnn_folder.network import inputs

    net_inputs = inputs([s.features for s in batch], device)
    n = max(len(s.points) for s in batch)
    x = np.zeros((len(batch), n, 3), np.float32)
    w = np.zeros((len(batch), n), np.float32)
    for b, s in enumerate(batch):
        x[b, : len(s.points)], w[b, : len(s.points)] = s.points, s.mass
    return net_inputs, torch.from_numpy(x).to(device), torch.from_numpy(w).to(device)


def train(samples, shape, weights: Weights = Weights(), config: TrainConfig = TrainConfig(), device: str = "cpu"):
    """Train one network over ``samples``; returns (network, facts for the record)."""
    import torch

    from cq.methods.cnn_folder.network import FolderNet
    from cq.palette_net import surrogate_loss

    t0, cpu0 = time.perf_counter(), _cpu_s()
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, config.threads))
    try:
        torch.manual_seed(config.seed)
        net = FolderNet(shape, anchors(samples, shape.k, config.seed), weights).to(device)
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        rng = np.random.default_rng(config.seed)
        batches = [_batch_tensors([samples[i] for i in chunk], device)
                   for chunk in np.array_split(np.arange(len(samples)), max(1, -(-len(samples) // config.batch)))]
        total = max(1, config.epochs * len(batches) - 1)
        curve, step = [], 0
        for epoch in range(config.epochs):
            losses = []
            for b in rng.permutation(len(batches)):
                (inp, x, w), progress = batches[b], step / total
                tau = config.tau[0] * (config.tau[1] / config.tau[0]) ** progress
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + np.cos(np.pi * progress))
                palette, caps = net(*inp, blind=config.constant_input)
                loss = surrogate_loss(palette, caps, x, w, weights, tau)[0].mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()) * len(x))
                step += 1
            curve.append(sum(losses) / len(samples))
            log.info("cnn_folder training: epoch %d/%d, surrogate %.2f (tau %.2f)", epoch + 1, config.epochs,
                     curve[-1], tau)
    finally:
        torch.set_num_threads(threads)
    facts = {"epochs": config.epochs, "loss_curve": curve, "n_images": len(samples),
             "wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - cpu0, "device": str(device),
             "train_config": asdict(config), "shape": shape.as_dict(), "weights": weights.as_dict()}
    return net.eval(), facts


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (a GPU run's CPU side included)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def save(path, net, weights: Weights) -> None:
    """Write the network (shape, objective weights, parameters) atomically to ``path``."""
    import torch

    from cq.fsutil import atomic_write_bytes

    buffer = io.BytesIO()
    state = {key: value.detach().cpu() for key, value in net.state_dict().items()}
    torch.save({"format": FORMAT, "shape": net.shape.as_dict(), "weights": weights.as_dict(), "state": state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load(path, device: str = "cpu"):
    """(network, objective weights it was trained for) from a file written by :func:`save`.
    A missing or foreign file is a one-line ValueError naming it."""
    import torch

    from cq.methods.cnn_folder.network import FolderNet, Shape

    try:
        blob = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such network file (the workflow's rule cnn_folder_network trains it)") from None
    except Exception as e:
        raise ValueError(f"{path}: not a cnn_folder network file ({type(e).__name__})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cnn_folder network file (format {FORMAT} expected)")
    shape = Shape(**{**blob["shape"], "channels": tuple(blob["shape"]["channels"])})
    n_bins = 1 << (3 * shape.bin_bits)
    net = FolderNet(shape, np.zeros((shape.k, 3)), Weights(**blob["weights"]))
    try:
        net.load_state_dict(blob["state"])
    except (RuntimeError, KeyError):
        raise ValueError(f"{path}: network file does not match its own shape") from None
    return net.to(device).eval(), Weights(**blob["weights"])
