"""The ``cnn_folder`` method: the folder network's palette for an image, as the start of the descent.

Per image: one forward pass of the folder network (trained over the folder by the workflow's
rule ``cnn_folder_network``; ``network.py``, ``train.py``) predicts the palette. That palette is
the one start of the exact score's public descent (``cq.descent``, which ``direct`` runs from
several k-means++ starts): Lloyd iterations on the 5-bit binned histogram, then on the full one,
then on uint8 colours, and, where the max cost is small, the k-median lattice search; the better
by exact score after finalisation is kept. A start near a good optimum needs one run and few
iterations where ``direct`` needs four from scratch.

Measured (``bench/cnn_folder.py`` on 271bafd: 200 crops of 95 training pictures, 25 held-out
pictures of other sources; score / k-aware lower bound, geometric means; CPU seconds of the calls,
direct in the same run, 2-core machine at load about 2): the prediction alone 1.0106 (a constant
input 1.32, a network trained on one 1.21); after the descent 1.0039 against direct's 1.0029
(ratio 1.0010, no worse on 2 of 25); per image 0.13 CPU s median against direct's 0.12, 1.01x in
total (one dark photo's lattice search, 3.7 s against 3.9, is more than half of it). It was 0.60x
before direct's own CPU was halved (direct version 6): a single start from the prediction no
longer saves what four k-means++ starts cost. With ``n_starts=4, fine_bits=8`` (against direct
version 5) the result was direct's on all 25 photos at 1.00x its CPU: the prediction never started
better than direct's best k-means++ start, so what it buys is a cheap single start, not a better one.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from cq.descent import exact_result, integer_lloyd, kmeans_plusplus, lattice_search, lloyd, round_within
from cq.histogram import pack_rgb
from cq.methods import Problem, Proposal, register, register_batch
from cq.methods.cnn_folder.features import features
from cq.objective import best_cap, ideal_colors, vertex_cost
from cq.points import binned_points, exact_points, fine_points

DEVICES = ("auto", "cpu", "cuda")
GPU_BATCH = 64  # images per call in a shard job on a GPU; on the CPU one at a time


@register("cnn_folder", version="2", network="", device="auto", n_starts=0, seed=0, coarse_bits=5, coarse_iter=60,
          fine_bits=6, fine_iter=20, int_iter=10, fine_max_colors=400_000, lattice_cap=4.0, threads=1, limits=dict(
              n_starts=(0, 1000), coarse_bits=(1, 8), fine_bits=(1, 8), coarse_iter=(0, 10**5), fine_iter=(0, 10**5),
              int_iter=(1, 10**5), fine_max_colors=(1, 2**24), lattice_cap=(0, 8), threads=(1, 256), device=DEVICES))
def cnn_folder(problem: Problem, *, network: str = "", device: str = "auto", n_starts: int = 0, seed: int = 0,
               coarse_bits: int = 5, coarse_iter: int = 60, fine_bits: int = 6, fine_iter: int = 20,
               int_iter: int = 10, fine_max_colors: int = 400_000, lattice_cap: float = 4.0,
               threads: int = 1) -> Proposal:
    """Predict this image's palette with the folder network, then descend from it.

    Parameters
    ----------
    network : the network file (the workflow fills in the one its rule ``cnn_folder_network``
        trained; a path set in the config is used as it is).
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda``: where the network runs.
    n_starts, seed : k-means++ starts beside the prediction, seeded as ``direct`` seeds its own
        (so that, when one of them beats the prediction on the binned histogram, the descent goes on
        from ``direct``'s own best start).
    coarse_bits, coarse_iter : the first Lloyd run from the prediction, on the histogram binned to
        ``coarse_bits`` per channel, at most ``coarse_iter`` iterations (0: no descent at all, the
        prediction rounded and finalised: the network alone).
    fine_bits : the real-valued Lloyd after the starts runs on the histogram binned to this many bits
        per channel (8: the full histogram, as in ``direct``; 6 costs about a fifth as much per
        iteration and, from the prediction, lost under 0.01% of the score in bench/cnn_folder.py).
    fine_iter, int_iter, fine_max_colors, lattice_cap : the descent's later stages, as in ``direct``
        (the uint8 Lloyd always on the full histogram, or its finest binning of at most
        ``fine_max_colors`` colours).
    threads : CPU threads for torch during the call.
    """
    return run_many([problem], network=network, device=device, n_starts=n_starts, seed=seed, coarse_bits=coarse_bits, coarse_iter=coarse_iter,
                    fine_bits=fine_bits, fine_iter=fine_iter, int_iter=int_iter, fine_max_colors=fine_max_colors,
                    lattice_cap=lattice_cap, threads=threads)[0]


def _batch_size(*, device: str = "auto", **params) -> int:
    return GPU_BATCH if resolve_device(device) == "cuda" else 1


@register_batch("cnn_folder", size=_batch_size)
def cnn_folder_batch(problems, **params) -> list[Proposal]:
    """``cnn_folder`` on many images at once: one batched forward pass, then each image's descent."""
    return run_many(problems, **params)


def resolve_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"cnn_folder: unknown device {device!r}; expected one of {DEVICES}")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _check(params: dict) -> None:
    for name in ("n_starts", "coarse_iter", "fine_iter", "int_iter"):
        if params[name] < 0:
            raise ValueError(f"cnn_folder: {name} must be >= 0, got {params[name]}")
    if not params["threads"] > 0:
        raise ValueError(f"cnn_folder: threads must be > 0, got {params['threads']}")
    for name in ("coarse_bits", "fine_bits"):
        if not 1 <= params[name] <= 8:
            raise ValueError(f"cnn_folder: {name} must be in 1..8, got {params[name]}")
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
    """Predict every problem's palette in one pass, then descend from each (one k and one set of
    weights for all)."""
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
    out = []
    for problem, palette, cap in zip(problems, predicted, caps):
        proposal = descend(problem, palette, params)
        proposal.extras.update(device=device, predicted_cap=float(cap), seconds=time.perf_counter() - t0)
        out.append(proposal)
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


def _best_start(points, start: np.ndarray, weights, params: dict) -> np.ndarray:
    """The best real palette (by its score on ``points``) of Lloyd runs from the prediction and from
    ``n_starts`` k-means++ seeds on the ideal colours under the lower bound's cap (``direct``'s)."""
    best = lloyd(points, start, weights, params["coarse_iter"])
    if params["n_starts"]:
        cap = best_cap(vertex_cost(points.colors), points.weights, weights, points.n_pixels)
        targets, rng = ideal_colors(points.colors, cap, weights), np.random.default_rng(params["seed"])
        for _ in range(params["n_starts"]):
            seeds = kmeans_plusplus(targets, len(start), points.weights, rng)
            run = lloyd(points, seeds, weights, params["coarse_iter"])
            best = run if run[2] < best[2] else best
    return best[0]


def prediction_score(problem: Problem, palette: np.ndarray, cap: float) -> float:
    """The exact score of a predicted palette, rounded within its cap and finalised (no descent)."""
    return exact_result(problem.hist, exact_points(problem.hist), round_within(palette, cap), problem.k,
                        problem.weights)[0]


def descend(problem: Problem, start: np.ndarray, params: dict) -> Proposal:
    """The exact score's descent (cq.descent) from one real palette: Lloyd on the binned, then the
    fine histogram, uint8 Lloyd, and the lattice search under a small max cost; the best stage by
    exact score. With ``coarse_iter`` 0, only ``start`` rounded."""
    hist, k, weights = problem.hist, problem.k, problem.weights
    with threadpool_limits(limits=1, user_api="blas"):  # inner size 3: threads only contend
        full = exact_points(hist)
        coarse = binned_points(hist, params["coarse_bits"], k)
        pal8 = round_within(start, float(vertex_cost(start).max(initial=0.0)))
        if params["coarse_iter"]:
            palette = _best_start(coarse, start, weights, params)
            fine = fine_points(hist, k, params["fine_max_colors"])
            binned = fine if params["fine_bits"] == 8 else binned_points(hist, params["fine_bits"], k)
            palette = lloyd(binned, palette, weights, params["fine_iter"])[0] if params["fine_iter"] else palette
            pal8 = integer_lloyd(fine, palette, weights, params["int_iter"])[0]
        results = {"descent" if params["coarse_iter"] else "prediction": exact_result(hist, full, pal8, k, weights)}
        if params["coarse_iter"] and float(vertex_cost(pal8).max()) < params["lattice_cap"]:
            results["lattice"] = lattice_search(coarse, hist, full, k, weights, params["lattice_cap"])
        if hist.n_colors <= k:  # or each colour its own (finalisation adds the missing ones)
            results["own colours"] = exact_result(hist, full, hist.colors, k, weights)
    stage = min(results, key=lambda name: results[name][0])
    score, pal8, labels = results[stage]
    order = np.argsort(pack_rgb(pal8))  # finalize's order, so that it returns these arrays unchanged
    pal8, labels = pal8[order], np.argsort(order)[labels]
    return Proposal(pal8, labels, rule="objective", extras={"stage": stage, "final_score": score,
                                                            "max_cost": float(vertex_cost(pal8).max())})
