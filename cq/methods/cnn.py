"""The headline method: a fresh convolutional network per image whose output is the palette.

The network (the tutorial's: three 3x3 convolutions with ReLU and 2x2 max-pooling, then fully
connected layers with dropout and a sigmoid) sees the image resized with antialiasing to its
square input, and outputs ``k`` RGB colours. It is trained on a differentiable surrogate of the
exact score, evaluated on the full image's colour histogram (merged into weighted bin centroids
when it has more than ``max_points`` colours):

- every colour takes a soft assignment, ``-tau * logsumexp(-E / tau)`` over the palette, of its
  per-pixel objective ``E = (w_mse/3)||p - c||^2 + w_mean * cost(c)`` (the cost-aware
  assignment of OBJECTIVE.md); ``tau`` is annealed geometrically, so the surrogate tends to the
  exact per-pixel terms;
- the max-cost term is a smooth maximum (``logsumexp`` at temperature ``tau / 10``) of the
  palette's costs.

For fast convergence the output layer's bias starts at the logit of a data-driven palette, a
weighted k-means++ seeding of every colour's ideal output (the colour moved toward its nearest
cube vertex as in the lower bound); its weights and every other layer keep their fresh, seeded
initialisation, so the first palette already depends on the image's features, and every layer is
trained. After each epoch the network's palette
(dropout off) is finalised to exactly ``k`` colours and scored exactly; the best epoch is kept.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from cq.finalize import finalize
from cq.histogram import ColorHistogram
from cq.methods import Problem, Proposal, register
from cq.objective import Weights, best_cap, ideal_colors, score_assignment, vertex_cost

log = logging.getLogger(__name__)

OOM_FALLBACK = "cuda out of memory: retried on cpu"
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Config:
    """Everything that shapes one training run (see :func:`cnn` for the meaning of each)."""

    seed: int = 0
    epochs: int = 25
    steps_per_epoch: int = 6
    lr: float = 0.05
    lr_body: float = 1e-4
    lr_final: float = 0.05
    tau_start: float = 50.0
    tau_end: float = 2.0
    input_size: int = 128
    channels: tuple[int, ...] = (32, 64, 128)
    hidden: tuple[int, ...] = (512, 256)
    dropout: float = 0.0
    max_points: int = 24576
    threads: int = 1


def _defaults() -> dict:
    """Config's defaults as plain JSON values (lists, not tuples), as records store them."""
    return {name: list(v) if isinstance(v, tuple) else v for name, v in asdict(Config()).items()}


@register("cnn", version="2", device="auto", **_defaults())
def cnn(problem: Problem, *, device: str = "auto", **params) -> Proposal:
    """Train a fresh network on this image's objective and return its best epoch's palette.

    Parameters
    ----------
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda``. Out of GPU memory, the
        run is retried on the CPU and ``extras["fallback"]`` says so.
    seed : seeds the network, dropout and the initial palette; CPU runs are deterministic.
    epochs, steps_per_epoch : the exact score is taken after each epoch of full-batch steps.
    lr, lr_body : Adam learning rates of the output layer and of all other layers.
    lr_final : the output layer's rate decays to ``lr * lr_final`` on a cosine schedule.
    tau_start, tau_end : soft-assignment temperature (score units), annealed geometrically.
    input_size, channels, hidden, dropout : the network; ``input_size`` must be divisible
        by ``2 ** len(channels)``. Dropout defaults to 0: the network fits one image, so
        there is nothing to generalise to, and its noise on the palette only slows training.
    max_points : the loss runs on at most this many weighted colours (histogram bins).
    threads : CPU threads for torch during the run (restored afterwards).
    """
    config = _config(params)
    if device not in DEVICES:
        raise ValueError(f"cnn: unknown device {device!r}; expected one of {DEVICES}")
    if device == "auto":
        device = "cuda" if _cuda_available() else "cpu"
    import torch

    try:
        return _train(problem, config, device)
    except torch.cuda.OutOfMemoryError:
        if device != "cuda":
            raise
        log.warning("cnn: %s", OOM_FALLBACK)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        proposal = _train(problem, config, "cpu")
        proposal.extras["fallback"] = OOM_FALLBACK
        return proposal


def _config(params: dict) -> Config:
    """A Config from keyword parameters; unknown names are an error naming the known ones."""
    known = Config.__dataclass_fields__
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TypeError(f"cnn: unknown parameter(s) {unknown}; known: {sorted(known) + ['device']}")
    for name in ("channels", "hidden"):
        if name in params:
            params = {**params, name: tuple(int(v) for v in params[name])}
    return Config(**params)


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device (a function so that tests can replace it)."""
    import torch

    return torch.cuda.is_available()


def _train(problem: Problem, config: Config, device: str) -> Proposal:
    """Train one network on ``device``; the best epoch's finalised palette and its curve."""
    import torch

    with _torch_state(config, device):
        return _fit(problem, config, torch.device(device))


@contextlib.contextmanager
def _torch_state(config: Config, device: str):
    """Seed, thread count and deterministic algorithms for one run; the caller's state restored."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    cuda = [torch.cuda.current_device()] if device == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        try:
            if device == "cpu":
                torch.set_num_threads(max(1, config.threads))
                torch.use_deterministic_algorithms(True)
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)


def _fit(problem: Problem, config: Config, device) -> Proposal:
    """The training loop: full-batch steps on the surrogate, exact score after every epoch."""
    import torch

    hist, k, weights = problem.hist, problem.k, problem.weights
    colors, mass = _points(hist, config.max_points)
    x = torch.as_tensor(colors, dtype=torch.float32, device=device)
    w = torch.as_tensor(mass / mass.sum(), dtype=torch.float32, device=device)
    image = _thumbnail(problem.image, config.input_size).to(device)

    net = build_network(k, config).to(device)
    _init_head(net, _initial_palette(colors, mass, k, weights, config.seed))
    optimizer, head = _optimizer(net, config, device)

    total = config.epochs * config.steps_per_epoch
    curve, best, cache = [], None, {}
    for epoch in range(config.epochs):
        net.train()
        for step in range(config.steps_per_epoch):
            progress = (epoch * config.steps_per_epoch + step) / max(total - 1, 1)
            tau = config.tau_start * (config.tau_end / config.tau_start) ** progress
            head["lr"] = config.lr * _cosine(progress, config.lr_final)
            loss = surrogate_loss(_palette(net, image, k), x, w, weights, tau)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        net.eval()
        with torch.no_grad():
            palette = _palette(net, image, k).double().cpu().numpy()
        quant, exact = _exact(hist, palette, k, weights, cache)
        curve.append(exact)
        if best is None or exact < best[0]:
            best = (exact, epoch, quant)
        log.info("cnn epoch %d/%d: exact score %.2f, best %.2f (epoch %d)",
                 epoch + 1, config.epochs, exact, best[0], best[1] + 1)
    exact, epoch, quant = best
    extras = {"device": device.type, "curve": curve, "best_epoch": epoch, "best_score": exact,
              "n_points": len(colors), "notes": list(quant.notes)}
    return Proposal(quant.palette, quant.labels, rule="objective", extras=extras)


def build_network(k: int, config: Config = Config()):
    """The tutorial's palette network: conv-ReLU-pool blocks, then dense layers with dropout.

    Returns an ``nn.Sequential`` mapping a (B, 3, S, S) image in [0, 1] to (B, 3k) values in
    (0, 1), where S is ``config.input_size``.
    """
    from torch import nn

    depth = len(config.channels)
    side = config.input_size >> depth
    if side < 1 or side << depth != config.input_size:
        raise ValueError(f"cnn: input_size {config.input_size} is not divisible by 2**{depth}")
    layers, width = [], 3
    for out in config.channels:
        layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        width = out
    layers.append(nn.Flatten())
    width *= side * side
    for out in config.hidden:
        layers += [nn.Linear(width, out), nn.ReLU(), nn.Dropout(config.dropout)]
        width = out
    layers += [nn.Linear(width, 3 * k), nn.Sigmoid()]
    return nn.Sequential(*layers)


def surrogate_loss(palette, colors, mass, weights: Weights, tau: float):
    """Differentiable score of ``palette`` (k, 3) for weighted ``colors`` (n, 3), 0..255 units.

    ``mass`` sums to 1. The per-pixel terms use a soft-min over the palette of the cost-aware
    objective at temperature ``tau`` (exact as ``tau -> 0``); the max-cost term is a smooth
    maximum of the palette's vertex costs at temperature ``tau / 10``.
    """
    import torch

    cost = _vertex_cost(palette)
    d2 = (colors * colors).sum(1, keepdim=True) - 2.0 * colors @ palette.T + (palette * palette).sum(1)
    per = weights.pixel_mse * d2.clamp_min(0.0) + weights.mean_cost * cost
    soft_min = -tau * torch.logsumexp(per / -tau, dim=1)
    tau_max = max(tau / 10.0, 0.25)
    soft_max = tau_max * torch.logsumexp(cost / tau_max, dim=0)
    return mass @ soft_min + weights.max_cost * soft_max


def _vertex_cost(palette):
    """Distance of each colour to its nearest cube vertex, smoothed at the vertex itself."""
    import torch

    near = torch.minimum(palette, 255.0 - palette)
    return (near * near).sum(1).add(1e-4).sqrt()


def _palette(net, image, k: int):
    """The network's palette, (k, 3) in 0..255."""
    return 255.0 * net(image).view(k, 3)


def _cosine(progress: float, final: float) -> float:
    """Cosine decay from 1 to ``final`` as ``progress`` goes from 0 to 1."""
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _optimizer(net, config: Config, device):
    """Adam over every layer; the output layer gets its own (larger, scheduled) learning rate.

    The output layer sets the colours directly and needs steps of a few units; the layers
    below only reshape its input features. Fused Adam is several times faster on 17M weights.
    """
    import torch

    head = net[-2]
    head_ids = {id(p) for p in head.parameters()}
    body = [p for p in net.parameters() if id(p) not in head_ids]
    groups = [{"params": list(head.parameters()), "lr": config.lr}, {"params": body, "lr": config.lr_body}]
    optimizer = torch.optim.Adam(groups, fused=True)
    return optimizer, optimizer.param_groups[0]


def _init_head(net, palette: np.ndarray) -> None:
    """Centre the output layer on ``palette``: its bias becomes logit(palette / 255)."""
    import torch

    head = net[-2]
    p = np.clip(palette / 255.0, 0.5 / 255.0, 254.5 / 255.0).reshape(-1)
    with torch.no_grad():
        head.bias.copy_(torch.as_tensor(np.log(p / (1.0 - p)), dtype=head.bias.dtype))


def _thumbnail(image: np.ndarray, size: int):
    """The image resized with antialiasing to (1, 3, size, size), values in [0, 1]."""
    import torch
    from PIL import Image

    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    small = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3])).resize(
        (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    array = np.asarray(small, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def _points(hist: ColorHistogram, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """The histogram's colours and counts, or the finest bins that give at most ``max_points``.

    A bin is its colours' count-weighted centroid with their total count, so the surrogate
    still weighs every pixel of the full image.
    """
    colors = hist.colors.astype(np.float64)
    counts = hist.counts.astype(np.float64)
    for bits in range(7, 0, -1):
        if len(colors) <= max_points:
            break
        shift = 8 - bits
        q = hist.colors.astype(np.int64) >> shift
        keys = (q[:, 0] << (2 * bits)) | (q[:, 1] << bits) | q[:, 2]
        _, inverse = np.unique(keys, return_inverse=True)
        counts = np.bincount(inverse, weights=hist.counts).astype(np.float64)
        sums = np.stack([np.bincount(inverse, weights=hist.counts * hist.colors[:, c]) for c in range(3)], 1)
        colors = sums / counts[:, None]
    return colors, counts


def _initial_palette(colors: np.ndarray, mass: np.ndarray, k: int, weights: Weights, seed: int) -> np.ndarray:
    """A data-driven starting palette: weighted k-means++ seeding of every colour's ideal output.

    The ideal output is the lower bound's: the colour moved toward its nearest vertex to
    radius ``clip(D - pull, 0, T)``, with ``T`` the bound's best cap.
    """
    from sklearn.cluster import kmeans_plusplus

    ideal = ideal_colors(colors, best_cap(vertex_cost(colors), mass, weights), weights)
    n_seeds = min(k, len(ideal))
    centers, _ = kmeans_plusplus(ideal, n_seeds, sample_weight=mass, random_state=seed)
    if n_seeds < k:  # fewer points than colours: repeat, finalisation separates them
        centers = centers[np.arange(k) % n_seeds]
    return centers


def _exact(hist: ColorHistogram, palette: np.ndarray, k: int, weights: Weights, cache: dict):
    """Finalise ``palette`` to exactly ``k`` colours (cost-aware assignment) and score it exactly.

    ``cache`` maps rounded palettes to their result: late epochs often repeat one, and
    finalising a palette with merged colours is the slowest step of an epoch.
    """
    key = np.clip(np.rint(palette), 0, 255).astype(np.uint8).tobytes()
    if key not in cache:
        quant = finalize(hist, palette, k=k, weights=weights, rule="objective")
        cache[key] = quant, score_assignment(hist, quant.palette, quant.labels, weights).score
    return cache[key]
