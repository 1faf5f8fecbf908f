"""The headline method: a small convolutional network per image whose output is the palette.

Network (the tutorial's shape, kept small): the image's 32x32 antialiased thumbnail goes through
three 3x3 convolutions (8, 16, 32 channels) with ReLU and 2x2 max-pooling, a dense ReLU layer
(64) and a linear head to ``3k`` colour values in 0..255 units; beside it, one trained scalar,
the log of the max-cost cap ``T``. Every colour is projected into the ball of radius ``T``
around its nearest cube vertex, so ``T`` bounds the max cost.

Start (``init_score``, the curve's first point): the head's bias is a weighted k-means++ seeding
of the image's colours (K-means's own start), its weights give the features a share of about
2 colour units, and ``T`` is the seeds' max cost. This palette ignores the objective's pull
toward the vertices and its max-cost term (1.18-1.36x the lower bound on the photographs, 4.4x
on a dark one); finding both is the training's job.

Surrogate of the exact score, on the histogram binned to 5 bits per channel (a few thousand
weighted centroids that still count every pixel): each colour pays a soft minimum, at
temperature ``tau`` annealed from 20 to 0.5, over the projected palette of its per-pixel
objective ``(w_mse/3)||p - c||^2 + w_mean*cost(c)``, plus ``w_max * T``. Its gradient with
respect to the palette and the costs has a closed form, so autograd runs only through the
network and the projection (same gradient as autograd on the whole surrogate, checked by a test,
several times cheaper).

Optimiser: the output bias takes diagonal Gauss-Newton steps (its gradient divided by
``2 (w_mse/3)`` times each colour's soft pixel share), which at low temperature and ``lr = 1``
are exactly Lloyd steps on the score; Adam trains the other layers and the cap, with a cosine
decay. After every epoch (8 steps) the palette is rounded (toward its vertex where rounding
would exceed the cap), unused colours are refilled where the image loses most, it is finalised
to exactly ``k`` colours and scored exactly (``curve``); training stops after 6 epochs without a
better exact score; the best epoch is kept (``best_score``, ``best_epoch``). Last, the best
palette is placed on the uint8 lattice by direct's integer-aware descent (4 steps) and, where the
max cost is under 4 (dark images, whose optimum is a set of lattice points next to the
vertices), direct's lattice k-median search is tried too; a finish is kept only if its exact
score is lower (``finish``, ``final_score``, the record's score).

``train_many`` trains a batch of images' networks at once (grouped convolutions and batched
products, one set of weights per image; an image that stopped early drops out of the steps): the
shard mode's entry point for a GPU. ``cnn`` is a batch of one. On the CPU a batch of the 8
photographs ran at 0.16 images/s against 0.19 one at a time (2.6 against 2.4 CPU s each): the
batch pays on a GPU, where it has not been measured yet (``bench/gpu.py``).

Measured on scikit-image's 8 photographs at 640x480 (``bench/cnn.py``; score / any-k lower bound,
geometric means; CPU s on a 2-core machine at load 8-12): start 1.486, best epoch 1.036 (1.0060
without the dark hubble_deep_field, whose network reaches only 1.276), after the finish 1.0056
(direct: 1.0054); gain from the start 15-71% per photo; median 2.9-3.1 CPU s per photo. Ablations
(same set, final score): the features ablated (``lr_body=0, head_init=0``) 1.0056, i.e. the
per-image fit lives in the output bias and the features do not matter; no finish 1.037 (the
uint8 placement is worth 0.1-0.4% per photo, and on hubble_deep_field the lattice search does
all the work); no annealing (``tau_start=0.5``) 1.0057; ``lr=0.5`` 1.0059; starts that already
know the objective, ``capped`` 1.0059 and ``ideal`` 1.0055, leave the training a gain of only
0-0.3% (the best epoch equals the start on several photos).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import time
from dataclasses import dataclass, field, fields

import numpy as np
from threadpoolctl import threadpool_limits

from cq.descent import round_within
from cq.histogram import coarsen
from cq.methods import Problem, Proposal, register, register_batch
from cq.methods.cnn.exact import exact_score, finish
from cq.objective import Weights, best_cap, ideal_colors, vertex_cost
from cq.palette_net import Optimiser, PaletteNets, backward, capped, cosine, thumbnails
from cq.points import Points, exact_points

log = logging.getLogger(__name__)

OOM_FALLBACK = "cuda out of memory: retried on cpu"
DEVICES = ("auto", "cpu", "cuda")
STARTS = ("colors", "capped", "ideal")


@dataclass(frozen=True)
class Config:
    """Everything that shapes one training run (see :func:`cnn` for the meaning of each)."""

    seed: int = 0
    epochs: int = 30
    steps_per_epoch: int = 8
    patience: int = 6
    lr: float = 1.0
    lr_final: float = 0.05
    lr_body: float = 1e-3
    lr_cap: float = 0.03
    tau_start: float = 20.0
    tau_end: float = 0.5
    start: str = "colors"
    head_init: float = 2.0
    input_size: int = 32
    channels: tuple[int, ...] = (8, 16, 32)
    hidden: int = 64
    bits: int = 5
    finish: int = 4
    lattice_cap: float = 4.0
    threads: int = 1


def _defaults() -> dict:
    """Config's defaults as plain JSON values (lists, not tuples), as records store them."""
    return {f.name: list(getattr(Config(), f.name)) if isinstance(getattr(Config(), f.name), tuple)
            else getattr(Config(), f.name) for f in fields(Config)}


def cnn(problem: Problem, *, device: str = "auto", **params) -> Proposal:
    """Train a fresh network on this image's objective and return its best epoch's palette.

    Parameters
    ----------
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda``. Out of GPU memory, the
        run is retried on the CPU and ``extras["fallback"]`` says so.
    seed : seeds the network and the starting palette; CPU runs are deterministic.
    epochs : at most this many epochs of ``steps_per_epoch`` full-batch steps, each followed by
        an exact score; 0 returns the untrained network's palette (no finish either).
    patience : stop after this many epochs without a better exact score.
    lr : step of the output bias (the palette), as a fraction of the way to each colour's best
        position for its current pixels (1: a Lloyd-like step).
    lr_body, lr_cap, lr_final : Adam rates of every other layer and of the log of the max-cost
        cap, decayed on a cosine to ``lr_final`` times their start.
    tau_start, tau_end : soft-assignment temperature (score units per pixel), annealed geometrically.
    start : ``colors``: the output bias starts at a weighted k-means++ seeding of the image's
        colours (K-means's start) and the cap at their max cost, so training must find the pull
        toward the vertices and the cap; ``capped``: the same seeds under the lower bound's cap;
        ``ideal``: seeds of each colour's ideal output under that cap (a start that is nearly done).
    head_init : typical size, in colour units, of the features' initial share of the palette.
    input_size, channels, hidden : the network (thumbnail side, conv widths, dense width);
        ``input_size`` must be divisible by ``2 ** len(channels)``.
    bits : the surrogate runs on the histogram binned to ``bits`` per channel.
    finish : steps of uint8-lattice placement of the best epoch's palette (0: plain rounding).
    lattice_cap : below this max cost the finish also tries direct's lattice k-median search.
    threads : CPU threads for torch during the run (restored afterwards).
    """
    config = make_config(**params)  # a misspelt name is a TypeError naming it
    return train_many([problem], config, device)[0]


def _signature() -> inspect.Signature:
    """``cnn``'s signature, made from :class:`Config`: the parameters are declared once, there."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("problem", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Problem),
              inspect.Parameter("device", keyword, default="auto", annotation=str)]
    params += [inspect.Parameter(f.name, keyword, default=f.default, annotation=f.type) for f in fields(Config)]
    return inspect.Signature(params, return_annotation=Proposal)


cnn.__signature__ = _signature()


def _check(params: dict) -> None:
    """The parameters as :func:`make_config` takes them, and the device name (not whether it is
    there: a cluster's GPU nodes are not the machine that checks)."""
    make_config(**{name: value for name, value in params.items() if name != "device"})


register("cnn", version="6", device="auto", **_defaults(), check=_check, limits=dict(
    device=DEVICES, start=STARTS, seed=(0, 2**63 - 1), steps_per_epoch=(1, 10**5), patience=(1, 10**5),
    input_size=(8, 512), hidden=(1, 4096), bits=(1, 8), lattice_cap=(0, 8), threads=(1, 256)))(cnn)


def make_config(**params) -> Config:
    """A checked Config; a bad value is a one-line ValueError naming the parameter."""
    unknown = sorted(set(params) - {f.name for f in fields(Config)})
    if unknown:
        raise TypeError(f"cnn: unknown parameter(s) {unknown}")
    if "channels" in params:
        channels = params["channels"]
        if not channels or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in channels):
            raise ValueError(f"cnn: channels must be one or more integers >= 1, got {channels!r}")
        params["channels"] = tuple(int(v) for v in params["channels"])
    config = Config(**params)
    for name in ("epochs", "steps_per_epoch", "patience", "bits", "threads", "input_size", "hidden"):
        if getattr(config, name) < (0 if name == "epochs" else 1):
            least = 0 if name == "epochs" else 1
            raise ValueError(f"cnn: {name} must be >= {least}, got {getattr(config, name)}")
    if not 1 <= config.bits <= 8:
        raise ValueError(f"cnn: bits must be in 1..8, got {config.bits}")
    for name in ("lr_body", "lr_cap", "finish", "lattice_cap"):
        if getattr(config, name) < 0:
            raise ValueError(f"cnn: {name} must be >= 0, got {getattr(config, name)}")
    for name in ("lr", "tau_start", "tau_end", "lr_final"):
        if not getattr(config, name) > 0:
            raise ValueError(f"cnn: {name} must be > 0, got {getattr(config, name)}")
    if config.start not in STARTS:
        raise ValueError(f"cnn: start must be one of {STARTS}, got {config.start!r}")
    depth = len(config.channels)
    if not config.channels or config.input_size % (1 << depth):
        raise ValueError(f"cnn: input_size {config.input_size} is not divisible by 2**{depth} (channels)")
    return config


def resolve_device(device: str) -> str:
    """``cpu`` or ``cuda`` for a requested ``auto``/``cpu``/``cuda``."""
    if device not in DEVICES:
        raise ValueError(f"cnn: unknown device {device!r}; expected one of {DEVICES}")
    return ("cuda" if _cuda_available() else "cpu") if device == "auto" else device


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device (a function so that tests can replace it)."""
    import torch

    return torch.cuda.is_available()


def train_many(problems, config: Config = Config(), device: str = "auto", names=None) -> list[Proposal]:
    """Train one network per problem, all in one batch (batched weights), and return their proposals.

    The shard mode's entry point: on a GPU one call trains many images' networks at once. Every
    problem must share ``k`` and the weights. Each image gets the same result as alone, up to
    float rounding (its network, seed and early stopping are its own). ``names`` label the
    progress lines. Out of GPU memory, the batch is retried on the CPU.
    """
    import torch

    problems = list(problems)
    if not problems:
        return []
    device = resolve_device(device)
    if names is None:
        names = [f"{p.image.shape[1]}x{p.image.shape[0]} image ({p.hist.n_colors} colours)" for p in problems]
        if len(problems) > 1:
            names = [f"{name}, {i + 1}/{len(problems)}" for i, name in enumerate(names)]
    named = list(zip(names, problems))
    try:
        return _train(named, config, device)
    except torch.cuda.OutOfMemoryError:
        if device != "cuda":
            raise
        log.warning("cnn: %s", OOM_FALLBACK)
        torch.cuda.empty_cache()
        proposals = _train(named, config, "cpu")
        for proposal in proposals:
            proposal.extras["fallback"] = OOM_FALLBACK
        return proposals


# Images trained at once by a shard job on a GPU. On the CPU batching does not pay (8 photos:
# 0.16 images/s batched against 0.19 one at a time), so there a shard trains one at a time.
GPU_BATCH = 16


def _batch_size(*, device: str = "auto", **params) -> int:
    return GPU_BATCH if resolve_device(device) == "cuda" else 1


@register_batch("cnn", size=_batch_size)
def cnn_batch(problems, *, device: str = "auto", **params) -> list[Proposal]:
    """``cnn`` on many images at once (one network each, batched): the shard mode's GPU path."""
    return train_many(problems, make_config(**params), device=device)


def _train(named, config: Config, device: str) -> list[Proposal]:
    """Train the (name, problem) pairs' networks on ``device`` (``cpu`` or ``cuda``)."""
    import torch

    names, problems = zip(*named)
    with _torch_state(config, device), threadpool_limits(limits=1, user_api="blas"):
        return _fit(list(problems), config, torch.device(device), list(names))


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


@dataclass
class _Image:
    """One image's training state: binned colours, their pixel shares, its exact curve and best epoch."""

    problem: Problem
    name: str
    points: np.ndarray  # (n, 3) float64 bin centroids
    mass: np.ndarray  # (n,) float64, sums to 1
    patience: int
    curve: list = field(default_factory=list)
    best: tuple = (math.inf, 0, None, None)  # (exact score, epoch, Quantization, float palette)
    stale: int = 0
    cache: dict = field(default_factory=dict)

    @functools.cached_property
    def exact_points(self) -> Points:
        """The histogram's own colours, which exact scores assign."""
        return exact_points(self.problem.hist)

    @property
    def active(self) -> bool:
        """Still improving: fewer than ``patience`` epochs since its best."""
        return self.stale < self.patience


def _fit(problems, config: Config, device, names) -> list[Proposal]:
    """The training loop, for a batch of images: full-batch steps, exact score after every epoch."""
    import torch

    k, weights = problems[0].k, problems[0].weights
    if any(p.k != k or p.weights != weights for p in problems):
        raise ValueError("cnn: train_many needs one k and one set of weights for every problem")
    t0 = time.perf_counter()
    images = []
    for problem, name in zip(problems, names):
        points, mass, _ = coarsen(problem.hist, config.bits)
        images.append(_Image(problem, name, points, mass / mass.sum(), config.patience))
    x, w = _pad(images, device)
    starts = np.stack([_start_palette(im.points, im.mass, k, weights, config) for im in images])
    caps = np.array([best_cap(vertex_cost(im.points), im.mass, weights) if config.start != "colors"
                     else vertex_cost(start).max() for im, start in zip(images, starts)])
    net = PaletteNets(len(images), k, config, thumbnails(problems, config.input_size), starts, caps, device)
    optimizer = Optimiser(net, config, weights)
    _score_epoch(images, net, 0, weights)
    total = max(config.epochs * config.steps_per_epoch - 1, 1)
    for epoch in range(1, config.epochs + 1):
        if not any(im.active for im in images):
            break
        rows = torch.tensor([b for b, im in enumerate(images) if im.active], device=device)
        for step in range(config.steps_per_epoch):
            progress = ((epoch - 1) * config.steps_per_epoch + step) / total
            tau = config.tau_start * (config.tau_end / config.tau_start) ** progress
            share = torch.ones(len(images), k, device=device)
            share[rows] = backward(net, x[rows], w[rows], weights, tau, rows)
            optimizer.step(share, config.lr, cosine(progress, config.lr_final))
        _score_epoch(images, net, epoch, weights)
    seconds = time.perf_counter() - t0
    return [_proposal(im, device, seconds / len(images), weights, config) for im in images]


def _score_epoch(images, net, epoch: int, weights: Weights) -> None:
    """Exact score of every still-active image's current palette; keeps each image's best."""
    import torch

    with torch.no_grad():
        palette, cap = net()
        palette = capped(palette, cap)[0].double().cpu().numpy()
        cap = cap.double().cpu().numpy()
    for b, im in enumerate(images):
        if not im.active:
            continue
        quant, exact = exact_score(im, round_within(palette[b], float(cap[b])), weights)
        im.curve.append(exact)
        if exact < im.best[0]:
            im.best, im.stale = (exact, epoch, quant, palette[b]), 0
        else:
            im.stale += 1
        log.log(logging.INFO if len(images) == 1 else logging.DEBUG,
                "cnn %s: epoch %d, exact score %.2f, best %.2f (epoch %d), start %.2f",
                im.name, epoch, exact, im.best[0], im.best[1], im.curve[0])
    if len(images) > 1:  # a batch: one line per epoch, not one per image
        gains = [1.0 - im.best[0] / im.curve[0] for im in images]
        log.info("cnn batch of %d: epoch %d, %d still improving, median gain over the start %.2f%%",
                 len(images), epoch, sum(im.active for im in images), 100 * float(np.median(gains)))


def _proposal(im: _Image, device, seconds: float, weights: Weights, config: Config) -> Proposal:
    """The best epoch's exactly-k palette, finished on the uint8 lattice, and the record's training facts."""
    exact, epoch = im.best[:2]
    steps = config.finish if config.epochs > 0 else 0  # epochs=0: the untrained network's own palette
    quant, final, placed = finish(im, weights, steps, config.lattice_cap)
    extras = {"device": device.type, "init_score": im.curve[0], "curve": im.curve, "best_score": exact,
              "best_epoch": epoch, "gain": 1.0 - exact / im.curve[0], "epochs_run": len(im.curve) - 1,
              "final_score": final, "finish": placed, "n_points": len(im.points), "train_s": seconds,
              "notes": list(quant.notes)}
    return Proposal(quant.palette, quant.labels, rule="objective", extras=extras)


def _pad(images, device):
    """Every image's points and masses as (B, N, 3) and (B, N) tensors, padded with zero mass."""
    import torch

    n = max(len(im.points) for im in images)
    x = np.zeros((len(images), n, 3), dtype=np.float32)
    w = np.zeros((len(images), n), dtype=np.float32)
    for b, im in enumerate(images):
        x[b, : len(im.points)] = im.points
        w[b, : len(im.points)] = im.mass
    return torch.from_numpy(x).to(device), torch.from_numpy(w).to(device)


def _start_palette(points: np.ndarray, mass: np.ndarray, k: int, weights: Weights,
                   config: Config) -> np.ndarray:
    """The output bias's start: weighted k-means++ seeds of the ideal outputs or of the plain colours.

    A colour's ideal output is the lower bound's: moved toward its nearest vertex to radius
    ``clip(D - pull, 0, T)``, with ``T`` the bound's best cap.
    """
    from sklearn.cluster import kmeans_plusplus

    data = points
    if config.start == "ideal":
        data = ideal_colors(points, best_cap(vertex_cost(points), mass, weights), weights)
    n_seeds = min(k, len(data))
    centers, _ = kmeans_plusplus(data, n_seeds, sample_weight=mass, random_state=config.seed)
    return centers[np.arange(k) % n_seeds]  # fewer points than colours: repeats, finalisation separates
