"""The ``cnn_folder`` method: the folder network's palette for an image, fine-tuned, then finished.

Per image: one forward pass of the folder network (trained over the folder by the workflow's
rule ``cnn_folder_network``; ``network.py``, ``train.py``) predicts the palette and the max-cost
cap. Then ``steps`` fine-tuning steps from that prediction on this image's own surrogate (5-bit
binned colours): the output palette takes the cnn's diagonal Gauss-Newton steps (Lloyd-like at
``lr = 1``), Adam moves the cap, the temperature falls from ``tau_start`` to ``tau_end``. The
better of prediction and fine-tuned palette by exact score (rounded within the cap, finalised to
exactly k) is finished as the cnn finishes: direct's uint8 placement, kept only if it scores lower.

Measured (``bench/cnn_folder.py``; 200 crops of 95 training pictures, 25 held-out pictures of other
sources at <= 512 px; score / k-aware lower bound, geometric means; CPU seconds, 2-core machine at
load 6): the prediction alone 1.0093; the same network shown a constant input 1.32, a network
trained on a constant input 1.21 (+2.1% median per photo, worse on 23 of 25); fine-tuned 1.0074;
finished 1.0045, against direct's 1.0031 (cnn_folder / direct 1.0015; no worse than direct on 1
photo of 25); per image 0.30 CPU s median against direct's 0.27 (1.25x in total: three exact
scores on the full histogram, the prediction's, the fine-tuned palette's and the finish's, cost
most of it); training 19 CPU s for 30 epochs on 200 crops.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from cq.methods import Problem, Proposal, register, register_batch
from cq.methods.cnn.exact import exact_score, finish, round_within
from cq.methods.cnn_folder.features import features, surrogate_points

DEVICES = ("auto", "cpu", "cuda")
GPU_BATCH = 64  # images per call in a shard job on a GPU; on the CPU one at a time


@dataclass
class _State:
    """One image's state for the exact score and the finish (the fields ``cq.methods.cnn.exact`` reads)."""

    problem: Problem
    points: np.ndarray
    mass: np.ndarray
    cache: dict = field(default_factory=dict)
    best: tuple = (math.inf, 0, None, None)  # (exact score, step, Quantization, float palette)


@register("cnn_folder", version="1", network="", device="auto", steps=12, lr=1.0, lr_cap=0.03, tau_start=2.0,
          tau_end=0.5, bits=5, finish=4, lattice_cap=4.0, threads=1)
def cnn_folder(problem: Problem, *, network: str = "", device: str = "auto", steps: int = 12, lr: float = 1.0,
               lr_cap: float = 0.03, tau_start: float = 2.0, tau_end: float = 0.5, bits: int = 5, finish: int = 4,
               lattice_cap: float = 4.0, threads: int = 1) -> Proposal:
    """Predict this image's palette with the folder network, fine-tune it, finish it.

    Parameters
    ----------
    network : the network file (the workflow fills in the one its rule ``cnn_folder_network``
        trained; a path set in the config is used as it is).
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    steps : fine-tuning steps from the prediction (0: the prediction alone, finished).
    lr, lr_cap : step of the palette (a fraction of the way to each colour's best position for
        its current pixels) and Adam rate of the cap's log.
    tau_start, tau_end : the fine-tuning's soft-assignment temperature, annealed geometrically.
    bits : the fine-tuning runs on the histogram binned to ``bits`` per channel.
    finish, lattice_cap : the cnn's uint8 finish (steps of direct's placement; below this max cost
        direct's lattice search too).
    threads : CPU threads for torch during the call.
    """
    return run_many([problem], network=network, device=device, steps=steps, lr=lr, lr_cap=lr_cap,
                    tau_start=tau_start, tau_end=tau_end, bits=bits, finish=finish, lattice_cap=lattice_cap,
                    threads=threads)[0]


def _batch_size(*, device: str = "auto", **params) -> int:
    return GPU_BATCH if resolve_device(device) == "cuda" else 1


@register_batch("cnn_folder", size=_batch_size)
def cnn_folder_batch(problems, **params) -> list[Proposal]:
    """``cnn_folder`` on many images at once: one batched forward pass and batched fine-tuning."""
    return run_many(problems, **params)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"cnn_folder: unknown device {device!r}; expected one of {DEVICES}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check(params: dict) -> None:
    for name in ("steps", "finish"):
        if params[name] < 0:
            raise ValueError(f"cnn_folder: {name} must be >= 0, got {params[name]}")
    for name in ("lr", "tau_start", "tau_end", "threads"):
        if not params[name] > 0:
            raise ValueError(f"cnn_folder: {name} must be > 0, got {params[name]}")
    if not 1 <= params["bits"] <= 8:
        raise ValueError(f"cnn_folder: bits must be in 1..8, got {params['bits']}")
    if not params["network"]:
        raise ValueError("cnn_folder: no network file given (parameter network; the workflow's rule "
                         "cnn_folder_network trains one)")


@functools.lru_cache(maxsize=4)
def _cached(path: str, stamp: tuple, device: str):
    from cq.methods.cnn_folder.train import load

    return load(path, device)


def load_network(path: str, device: str):
    """The network at ``path`` on ``device``, loaded once per process (while the file is unchanged)."""
    try:
        st = os.stat(path)
    except OSError:
        raise ValueError(f"{path}: no such network file (the workflow's rule cnn_folder_network trains it)") from None
    return _cached(os.path.realpath(path), (st.st_size, st.st_mtime_ns), device)


@contextlib.contextmanager
def _threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_many(problems, **params) -> list[Proposal]:
    """Predict, fine-tune and finish every problem (one k and one set of weights for all)."""
    import torch

    _check(params)
    device = resolve_device(params["device"])
    problems = list(problems)
    k, weights = problems[0].k, problems[0].weights
    if any(p.k != k or p.weights != weights for p in problems):
        raise ValueError("cnn_folder: a batch needs one k and one set of weights")
    with _threads(params["threads"]), torch.no_grad():
        net, trained_for = load_network(params["network"], device)
    if net.shape.k != k or trained_for != weights:
        raise ValueError(f"{params['network']}: network trained for k={net.shape.k}, weights "
                         f"{trained_for.as_dict()}; this job has k={k}, weights {weights.as_dict()}")
    t0 = time.perf_counter()
    with _threads(params["threads"]):
        predicted, caps = predict(net, problems, device)
        states = [_State(p, *surrogate_points(p.hist, params["bits"])) for p in problems]
        tuned, tuned_caps = fine_tune(states, predicted, caps, params, device)
    out = []
    for state, pal, cap, tpal, tcap in zip(states, predicted, caps, tuned, tuned_caps):
        out.append(_finish(state, (pal, cap), (tpal, tcap), params, device, time.perf_counter() - t0))
    return out


def predict(net, problems, device, constant: bool = False):
    """The network's capped palettes (B, k, 3) float64 and caps (B,) for the problems, one forward pass.
    ``constant``: the network sees a constant in place of each image (the ablation, ``FolderNet``)."""
    import torch

    from cq.methods.cnn_folder.network import inputs
    from cq.palette_net import capped

    feats = [features(p.image, p.hist, net.shape.input_size, net.shape.bin_bits, p.weights) for p in problems]
    with torch.no_grad():
        raw, cap = net(*inputs(feats, device), blind=constant)
        palette = capped(raw, cap)[0]
    return palette.double().cpu().numpy(), cap.double().cpu().numpy()


class _Palettes:
    """The fine-tuned variables, shaped as ``cq.palette_net``'s optimiser expects of a network:
    the palette as the output bias (B, 3k), no body, the cap's log."""

    def __init__(self, palette, cap):
        self.k = palette.shape[1]
        self.head_b = palette.reshape(len(palette), -1).clone().requires_grad_()
        self.log_cap = cap.log().clone().requires_grad_()

    def body(self) -> list:
        return []

    def cap(self) -> list:
        return [self.log_cap]

    def __call__(self, rows=None):
        b = self.head_b if rows is None else self.head_b[rows]
        c = self.log_cap if rows is None else self.log_cap[rows]
        return b.reshape(len(b), self.k, 3), c.exp()


def fine_tune(states, palettes: np.ndarray, caps: np.ndarray, params: dict, device):
    """``steps`` Gauss-Newton steps on each image's surrogate from its predicted palette and cap."""
    import torch

    from cq.palette_net import Optimiser, backward, capped

    steps = params["steps"]
    if steps == 0:
        return palettes, caps
    weights = states[0].problem.weights
    n = max(len(s.points) for s in states)
    x = np.zeros((len(states), n, 3), np.float32)
    w = np.zeros((len(states), n), np.float32)
    for b, s in enumerate(states):
        x[b, : len(s.points)], w[b, : len(s.points)] = s.points, s.mass
    x, w = torch.from_numpy(x).to(device), torch.from_numpy(w).to(device)
    net = _Palettes(torch.as_tensor(palettes, dtype=torch.float32, device=device),
                    torch.as_tensor(np.maximum(caps, 1e-3), dtype=torch.float32, device=device))
    optimiser = Optimiser(net, SimpleNamespace(lr_body=0.0, lr_cap=params["lr_cap"]), weights)
    for step in range(steps):
        tau = params["tau_start"] * (params["tau_end"] / params["tau_start"]) ** (step / max(steps - 1, 1))
        share = backward(net, x, w, weights, tau)
        optimiser.step(share, params["lr"], 1.0)
    with torch.no_grad():
        palette, cap = net()
        palette = capped(palette, cap)[0]
    return palette.double().cpu().numpy(), cap.double().cpu().numpy()


def _finish(state: _State, predicted, tuned, params: dict, device: str, seconds: float) -> Proposal:
    """Exact scores of the prediction and the fine-tuned palette; the better one finished."""
    weights = state.problem.weights
    scores = []
    for step, (palette, cap) in ((0, predicted), (params["steps"], tuned)):
        quant, exact = exact_score(state, round_within(palette, float(cap)), weights)
        scores.append(exact)
        if exact < state.best[0]:
            state.best = (exact, step, quant, palette)
    quant, final, placed = finish(state, weights, params["finish"], params["lattice_cap"])
    extras = {"device": device, "predicted_score": scores[0], "tuned_score": scores[1],
              "kept": "fine-tuned" if state.best[1] else "predicted", "final_score": final, "finish": placed,
              "predicted_cap": float(predicted[1]), "n_points": len(state.points), "seconds": seconds,
              "notes": list(quant.notes)}
    return Proposal(quant.palette, quant.labels, rule="objective", extras=extras)
