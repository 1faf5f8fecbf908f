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
products, one set of weights per image): the shard mode's entry point for a GPU. ``cnn`` is a
batch of one.

Measured with ``bench/cnn.py`` on the 8 bundled photographs at 640x480 (2-core machine, load 8-10),
score / any-k lower bound, geometric means: start 1.486, best epoch 1.0057 ... see bench output
ABLATIONS
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field, fields

import numpy as np
from threadpoolctl import threadpool_limits

from cq.finalize import finalize
from cq.histogram import coarsen, pack_rgb
from cq.methods import Problem, Proposal, register
from cq.objective import Weights, best_cap, ideal_colors, vertex_cost

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


@register("cnn", version="3", device="auto", **_defaults())
def cnn(problem: Problem, *, device: str = "auto", seed: int = 0, epochs: int = 30, steps_per_epoch: int = 8,
        patience: int = 6, lr: float = 1.0, lr_final: float = 0.05, lr_body: float = 1e-3, lr_cap: float = 0.03,
        tau_start: float = 20.0, tau_end: float = 0.5, start: str = "colors", head_init: float = 2.0,
        input_size: int = 32, channels=(8, 16, 32), hidden: int = 64, bits: int = 5, finish: int = 4,
        lattice_cap: float = 4.0, threads: int = 1) -> Proposal:
    """Train a fresh network on this image's objective and return its best epoch's palette.

    Parameters
    ----------
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda``. Out of GPU memory, the
        run is retried on the CPU and ``extras["fallback"]`` says so.
    seed : seeds the network and the starting palette; CPU runs are deterministic.
    epochs : at most this many epochs of ``steps_per_epoch`` full-batch steps, each followed by
        an exact score; 0 returns the untrained network's palette.
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
    config = make_config(seed=seed, epochs=epochs, steps_per_epoch=steps_per_epoch, patience=patience, lr=lr,
                         lr_final=lr_final, lr_body=lr_body, lr_cap=lr_cap, tau_start=tau_start, tau_end=tau_end,
                         start=start, head_init=head_init, input_size=input_size, channels=channels,
                         hidden=hidden, bits=bits, finish=finish, lattice_cap=lattice_cap, threads=threads)
    return train_many([problem], config, device)[0]


def make_config(**params) -> Config:
    """A checked Config; a bad value is a one-line ValueError naming the parameter."""
    unknown = sorted(set(params) - {f.name for f in fields(Config)})
    if unknown:
        raise TypeError(f"cnn: unknown parameter(s) {unknown}")
    if "channels" in params:
        params["channels"] = tuple(int(v) for v in params["channels"])
    config = Config(**params)
    for name in ("epochs", "steps_per_epoch", "patience", "bits", "threads", "input_size", "hidden"):
        if getattr(config, name) < (0 if name == "epochs" else 1):
            raise ValueError(f"cnn: {name} must be >= {0 if name == 'epochs' else 1}, got {getattr(config, name)}")
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
    net = _Net(len(images), k, config, _thumbnails(problems, config.input_size), starts, caps, device)
    optimizer = _Optimiser(net, config, weights)
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
            optimizer.step(share, config.lr, _cosine(progress, config.lr_final))
        _score_epoch(images, net, epoch, weights)
    seconds = time.perf_counter() - t0
    return [_proposal(im, device, seconds / len(images), weights, config.finish, config.lattice_cap) for im in images]


def _score_epoch(images, net, epoch: int, weights: Weights) -> None:
    """Exact score of every still-active image's current palette; keeps each image's best."""
    import torch

    with torch.no_grad():
        palette, cap = net()
        palette = _capped(palette, cap)[0].double().cpu().numpy()
        cap = cap.double().cpu().numpy()
    for b, im in enumerate(images):
        if not im.active:
            continue
        quant, exact = _exact(im, _round(palette[b], float(cap[b])), weights)
        im.curve.append(exact)
        if exact < im.best[0]:
            im.best, im.stale = (exact, epoch, quant, palette[b]), 0
        else:
            im.stale += 1
        log.info("cnn %s: epoch %d, exact score %.2f, best %.2f (epoch %d), start %.2f",
                 im.name, epoch, exact, im.best[0], im.best[1], im.curve[0])


def _proposal(im: _Image, device, seconds: float, weights: Weights, finish: int, lattice_cap: float) -> Proposal:
    """The best epoch's exactly-k palette, finished on the uint8 lattice, and the record's training facts."""
    exact, epoch = im.best[:2]
    quant, final, placed = _finish(im, weights, finish, lattice_cap)
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


def _start_palette(points: np.ndarray, mass: np.ndarray, k: int, weights: Weights, config: Config) -> np.ndarray:
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


class _Net:
    """A batch of the tutorial's palette network, one independent set of weights per image.

    Per image: 3x3 convolutions with ReLU and 2x2 max-pooling on the image's thumbnail, a dense
    ReLU layer, then a linear head to ``3k`` colour values (0..255 units) and the log of the
    max-cost cap. The images' convolutions run as one grouped convolution and their dense layers
    as batched matrix products, so B networks cost one network's kernel launches.
    """

    def __init__(self, batch: int, k: int, config: Config, thumbs, starts: np.ndarray, caps: np.ndarray, device):
        import torch

        self.k, self.batch = k, batch
        gen = torch.Generator().manual_seed(config.seed)
        self.convs, width = [], 3
        for out in config.channels:
            self.convs.append(self._uniform(gen, batch, (out, width, 3, 3), width * 9)
                              + self._uniform(gen, batch, (out,), width * 9))
            width = out
        side = config.input_size >> len(config.channels)
        flat = width * side * side
        self.dense = self._uniform(gen, batch, (flat, config.hidden), flat) + self._uniform(gen, batch, (config.hidden,), flat)
        self.thumbs = thumbs
        self.head_w = self._uniform(gen, batch, (config.hidden, 3 * k), 3.0)[0]
        self.head_b = torch.as_tensor(starts.reshape(batch, -1), dtype=torch.float32)
        self.log_cap = torch.as_tensor(np.log(np.maximum(caps, 1.0)), dtype=torch.float32)
        with torch.no_grad():  # the features' share of the start: about ``head_init`` colour units
            scale = config.head_init / self._features().norm(dim=1).clamp_min(1e-6)
            self.head_w *= scale[:, None, None]
        tensors = [*(t for pair in self.convs for t in pair), *self.dense, self.head_w, self.head_b, self.log_cap,
                   self.thumbs]
        moved = [t.to(device).requires_grad_(t is not self.thumbs) for t in tensors]
        n = 2 * len(self.convs)
        self.convs = [tuple(moved[i:i + 2]) for i in range(0, n, 2)]
        self.dense, (self.head_w, self.head_b, self.log_cap, self.thumbs) = tuple(moved[n:n + 2]), moved[n + 2:]

    @staticmethod
    def _uniform(gen, batch: int, shape: tuple, fan_in: int):
        """One PyTorch-default (Kaiming-uniform) draw, the same for every image of the batch, as a 1-tuple."""
        import torch

        bound = 1.0 / math.sqrt(fan_in)
        one = (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound
        return (one.expand(batch, *shape).clone(),)

    def head_bias(self) -> list:
        return [self.head_b]

    def cap(self) -> list:
        return [self.log_cap]

    def body(self) -> list:
        return [*(t for pair in self.convs for t in pair), *self.dense, self.head_w]

    def _features(self, rows=None):
        """(B, hidden) features of every image's thumbnail (of the images ``rows`` only, if given)."""
        import torch
        import torch.nn.functional as F

        take = (lambda t: t) if rows is None else (lambda t: t[rows])
        thumbs = take(self.thumbs)
        b = len(thumbs)
        h = thumbs.reshape(1, -1, *thumbs.shape[-2:])
        for weight, bias in self.convs:
            weight = take(weight)
            h = F.conv2d(h, weight.reshape(-1, *weight.shape[2:]), take(bias).reshape(-1), padding=1, groups=b)
            h = F.max_pool2d(F.relu(h), 2)
        h = h.reshape(b, 1, -1)
        weight, bias = (take(t) for t in self.dense)
        return F.relu(torch.baddbmm(bias.unsqueeze(1), h, weight)).squeeze(1)

    def __call__(self, rows=None):
        """Every image's raw palette (B, k, 3) and max-cost cap (B,); or those of the images ``rows``.

        Taking rows keeps the gradient flowing to the full weights: images that stopped early
        cost nothing more in a batch.
        """
        import torch

        take = (lambda t: t) if rows is None else (lambda t: t[rows])
        out = torch.baddbmm(take(self.head_b).unsqueeze(1), self._features(rows).unsqueeze(1), take(self.head_w))
        return out.reshape(len(out), self.k, 3), take(self.log_cap).exp()


class _Optimiser:
    """Preconditioned steps for the output bias, Adam for every other weight.

    The surrogate's gradient for palette colour j is about ``2 (w_mse/3) m_j (c_j - t_j)``, where
    ``m_j`` is the pixel share it softly holds and ``t_j`` its best position for that share. Divided
    by ``2 (w_mse/3) m_j`` (a diagonal Gauss-Newton step), a step of ``lr`` moves the colour that
    fraction of the way to ``t_j``: at ``lr = 1`` and low temperature, exactly a Lloyd step on the
    score. Adam (written out: ``torch.optim`` costs 1.7 s of imports per process) trains the
    convolutions, dense layers, head weights and the cap.
    """

    def __init__(self, net, config: Config, weights: Weights):
        import torch

        self.net, self.config, self.curvature = net, config, 2.0 * weights.pixel_mse
        self.groups = [(net.body(), config.lr_body), (net.cap(), config.lr_cap)]
        self.moments = [[(torch.zeros_like(p), torch.zeros_like(p)) for p in params] for params, _ in self.groups]
        self.t = 0

    def step(self, share, lr: float, decay: float) -> None:
        """One step from the gradients in place; ``share`` (B, k) is each colour's soft pixel share,
        ``decay`` the schedule's factor on the Adam rates."""
        import torch

        self.t += 1
        with torch.no_grad():
            bias = self.net.head_b
            scale = (self.curvature * share).clamp_min(1e-6).repeat_interleave(3, dim=1)
            bias -= lr * bias.grad / scale
            bias.grad = None
            for (params, rate), moments in zip(self.groups, self.moments):
                for p, (m, v) in zip(params, moments):
                    if p.grad is None or rate == 0:
                        continue
                    m.mul_(0.9).add_(p.grad, alpha=0.1)
                    v.mul_(0.999).addcmul_(p.grad, p.grad, value=0.001)
                    denom = (v / (1 - 0.999 ** self.t)).sqrt_().add_(1e-8)
                    p.addcdiv_(m, denom, value=-rate * decay / (1 - 0.9 ** self.t))
                    p.grad = None


def _capped(palette, cap):
    """Clamp the palette to the cube (gradient passed straight through) and pull every colour
    farther than ``cap`` from its nearest vertex in to that radius; also returns the costs."""
    import torch

    c = palette + (palette.clamp(0.0, 255.0) - palette).detach()
    vertex = (c.detach() > 127.5).to(c.dtype) * 255.0
    out = c - vertex
    radius = (out * out).sum(-1).add(1e-6).sqrt()
    scale = torch.clamp(cap.unsqueeze(-1) / radius, max=1.0)
    return vertex + out * scale.unsqueeze(-1), radius * scale


def backward(net, colors, mass, weights: Weights, tau: float, rows=None):
    """Forward the networks, and back-propagate the surrogate's gradient into their weights.

    The gradient with respect to the capped palette and its costs has a closed form
    (``surrogate_terms``), so autograd only runs through the networks and the cap projection,
    not through the (n, k) soft assignment: several times faster than ``surrogate_loss``'s
    backward, with the same result. ``rows`` selects the images to train (all if None); ``colors``
    and ``mass`` are theirs. Returns each of their colours' soft pixel share (rows, k).
    """
    import torch

    palette, cap = net(rows)
    capped, cost = _capped(palette, cap)
    with torch.no_grad():
        _, grad_c, grad_cost, share = surrogate_terms(capped, cost, cap, colors, mass, weights, tau)
    torch.autograd.backward([capped, cost, cap], [grad_c, grad_cost, torch.full_like(cap, weights.max_cost)])
    return share


def surrogate_terms(capped, cost, cap, colors, mass, weights: Weights, tau: float):
    """The surrogate per image, its gradient with respect to the capped palette and to the costs
    (the cap's own term has gradient ``w_max``), and each colour's soft pixel share (B, k); see
    :func:`surrogate_loss`."""
    import torch

    d2 = (colors * colors).sum(-1, keepdim=True) - 2.0 * colors @ capped.transpose(1, 2)
    d2 = (d2 + (capped * capped).sum(-1).unsqueeze(1)).clamp_min_(0.0)
    z = (weights.pixel_mse * d2 + weights.mean_cost * cost.unsqueeze(1)).div_(-tau)
    top = z.max(dim=2, keepdim=True).values
    resp = z.sub_(top).exp_()
    total = resp.sum(2)
    lse = top.squeeze(-1) + total.log()
    resp.mul_((mass / total).unsqueeze(-1))  # m_i * p_ij, one exp over the (n, k) block
    share = resp.sum(1)
    grad_c = 2.0 * weights.pixel_mse * (share.unsqueeze(-1) * capped - resp.transpose(1, 2) @ colors)
    grad_cost = weights.mean_cost * share
    loss = -tau * (mass * lse).sum(1) + weights.max_cost * cap
    return loss, grad_c, grad_cost, share


def surrogate_loss(palette, cap, colors, mass, weights: Weights, tau: float):
    """Differentiable score, per image, of raw palettes (B, k, 3) with caps (B,) on weighted colours.

    ``colors`` (B, n, 3) in 0..255 with ``mass`` (B, n) summing to 1 per image. Each colour pays a
    soft minimum over the (capped) palette of its per-pixel objective
    ``(w_mse/3)||p - c||^2 + w_mean*cost(c)`` at temperature ``tau`` (exact as ``tau -> 0``).
    The max-cost term is ``w_max * cap``: every colour is held within the cap, so the cap bounds
    the max cost and equals it at the optimum; the cap is trained like a weight.
    """
    import torch

    c, cost = _capped(palette, cap)
    d2 = (colors * colors).sum(-1, keepdim=True) - 2.0 * colors @ c.transpose(1, 2) + (c * c).sum(-1).unsqueeze(1)
    per = weights.pixel_mse * d2.clamp_min(0.0) + weights.mean_cost * cost.unsqueeze(1)
    soft_min = -tau * torch.logsumexp(per / -tau, dim=2)
    with torch.no_grad():
        share = torch.einsum("bn,bnk->bk", mass, torch.softmax(per / -tau, dim=2))
    return (mass * soft_min).sum(1) + weights.max_cost * cap, share


def _round(palette: np.ndarray, cap: float) -> np.ndarray:
    """uint8 colours: nearest, except that a colour which rounding would push past the cap is
    rounded toward its vertex (never farther from it), so the max cost stays within the cap."""
    near = np.clip(np.rint(palette), 0, 255)
    vertex = palette > 127.5
    inward = np.where(vertex, np.ceil(palette), np.floor(palette)).clip(0, 255)
    over = vertex_cost(near) > max(cap, float(vertex_cost(palette).max(initial=0.0))) + 1e-9
    return np.where(over[:, None], inward, near).astype(np.uint8)


def _exact(im: "_Image", pal: np.ndarray, weights: Weights):
    """A uint8 palette finalised to exactly ``k`` colours (cost-aware assignment), and its exact score.

    ``im.cache`` maps uint8 palettes to their result: late epochs often repeat one.
    """
    problem, cache = im.problem, im.cache
    key = pal.tobytes()
    if key not in cache:
        pal, labels = _fill(problem.hist, pal, weights)
        quant = finalize(problem.hist, pal, labels, k=problem.k, weights=weights, rule="objective")
        cache[key] = quant, quant.score(problem.hist, weights).score
    return cache[key]


def _finish(im: "_Image", weights: Weights, steps: int, lattice_cap: float):
    """The best epoch's palette placed on the uint8 lattice, kept only if it beats plain rounding.

    ``steps`` of the integer-aware descent shared with ``direct`` (each cluster's best lattice
    point under the best common cap). Where the max cost is below ``lattice_cap`` (very dark or
    flat images, whose optimum is 37 distinct lattice points next to the vertices), rounding, not
    the palette's geometry, decides: direct's k-median search over those lattice points is tried
    too. Returns (quantization, exact score, which finish won).
    """
    from cq.methods.direct import _integer_lloyd, _lattice_search, _Points

    exact, _, quant, palette = im.best
    best = (quant, exact, "rounded")
    if not steps or len(im.points) < im.problem.k:  # direct's descent needs at least k points to reseed
        return best
    points = _Points(im.points, im.mass)
    pal = _integer_lloyd(points, palette, weights, steps)[0]
    candidates = [(pal, "lattice placement")]
    if vertex_cost(quant.palette).max() < lattice_cap or (pal is not None and vertex_cost(pal).max() < lattice_cap):
        candidates.append((_lattice_search(points, im.problem.k, weights, lattice_cap)[0], "lattice search"))
    for pal, name in candidates:
        if pal is not None:
            finished, score = _exact(im, pal, weights)
            if score < best[1]:
                best = (finished, score, name)
    return best


def _fill(hist, pal: np.ndarray, weights: Weights):
    """Give every unused or repeated palette colour a new place, where the image loses most.

    A new colour is a histogram colour's own ideal output under the palette's max cost, taken
    from the colours that pay most over their ideal, heaviest first. All in one vectorised pass,
    so that ``finalize`` seldom has to add colours one at a time (its careful search took most
    of an exact score's time on palettes with unused colours). Returns the palette and labels.
    """
    labels = _assign(hist.colors, pal, weights)
    k = len(pal)
    keys = pack_rgb(pal)
    dead = np.bincount(labels, minlength=k) == 0
    dead[np.setdiff1d(np.arange(k), np.unique(keys, return_index=True)[1])] = True
    if not dead.any() or dead.all():
        return pal, labels
    cap = float(vertex_cost(pal[~dead]).max())
    colors = hist.colors.astype(np.float64)
    ideal = _round(ideal_colors(colors, cap, weights), cap)
    own = weights.pixel_mse * ((colors - pal[labels]) ** 2).sum(1) + weights.mean_cost * vertex_cost(pal[labels])
    best = weights.pixel_mse * ((colors - ideal) ** 2).sum(1) + weights.mean_cost * vertex_cost(ideal)
    order = np.argsort(-(own - best) * hist.counts, kind="stable")
    candidates = pack_rgb(ideal[order[: 64 * k]])
    _, first = np.unique(candidates, return_index=True)
    fresh = np.sort(first)[~np.isin(candidates[np.sort(first)], keys[~dead])][: int(dead.sum())]
    pal = pal.copy()
    pal[np.flatnonzero(dead)[: len(fresh)]] = ideal[order[fresh]]
    return pal, _assign(hist.colors, pal, weights)


def _assign(colors: np.ndarray, palette: np.ndarray, weights: Weights, chunk: int = 1 << 14) -> np.ndarray:
    """Cost-aware assignment (``argmin_j (w_mse/3)||p - c_j||^2 + w_mean*cost(c_j)``), float32 products.

    The per-colour constant ``||p||^2`` is left out of the comparison; a few times faster than
    finalize's float64 assignment, which dominated the time of an exact score.
    """
    pal = palette.astype(np.float64)
    bias = (weights.pixel_mse * (pal * pal).sum(1) + weights.mean_cost * vertex_cost(pal)).astype(np.float32)
    scaled = (-2.0 * weights.pixel_mse * pal.T).astype(np.float32)
    labels = np.empty(len(colors), dtype=np.int64)
    for s in range(0, len(colors), chunk):
        block = colors[s:s + chunk].astype(np.float32) @ scaled
        block += bias
        labels[s:s + chunk] = block.argmin(1)
    return labels


def _thumbnails(problems, size: int):
    """Every image resized with antialiasing to (B, 3, size, size), values in [0, 1]."""
    import torch
    from PIL import Image

    arrays = []
    for problem in problems:
        pixels = np.asarray(problem.image)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        small = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3])).resize(
            (size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
        arrays.append(np.asarray(small, dtype=np.float32).transpose(2, 0, 1) / 255.0)
    return torch.from_numpy(np.stack(arrays))


def _cosine(progress: float, final: float) -> float:
    """Cosine decay from 1 to ``final`` as ``progress`` goes from 0 to 1."""
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
