"""Benchmark of ``cnn_folder`` on real photographs it was not trained on, against ``direct``.

Data (bench/_folder_photos.py): Debian's wallpaper packages, scikit-image's and scikit-learn's
bundled photographs; files of one picture are one source, sources are split into train and test
by group (no picture on both sides), the training set is ``--n-train`` crops of the training
sources (there are fewer than 200 sources), the test set one whole picture per test group.

It trains the folder network on the training crops (CPU seconds of the training alone), and a
second network on the same crops with the image input replaced by a constant (the ablation: the
network sees a constant thumbnail, histogram and cap hint; its palette still mixes the image's own
colour bins by their true shares). Per
test photo it prints, as score / k-aware lower bound (cq.bound): the prediction alone (rounded
within its cap, finalised to exactly k), the same network fed the constant input, the
constant-trained network, the result after the descent from the prediction, and direct; then
cnn_folder / direct, and the CPU seconds of each method's call (histogram built before, shared;
the first cnn_folder call, which imports torch and loads the network, is timed apart: a shard
job pays it once). Last, the geometric means and the targets of issue 21.
Run: nice -n 10 python bench/cnn_folder.py [--n-train 200] [--epochs 30] [--threads 1] [--param name=value]
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _folder_photos  # noqa: E402

from cq import bound  # noqa: E402
from cq.finalize import finalize  # noqa: E402
from cq.histogram import ColorHistogram  # noqa: E402
from cq.methods import Problem, get_method  # noqa: E402
from cq.objective import Weights  # noqa: E402

K = 37


def geomean(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def cpu_call(fn, *args, **kwargs):
    """(result, CPU seconds of this process)."""
    t = time.process_time()
    out = fn(*args, **kwargs)
    return out, time.process_time() - t


def exact(problem: Problem, proposal) -> float:
    quant = finalize(problem.hist, proposal.palette, proposal.labels, k=problem.k, rule=proposal.rule)
    return quant.score(problem.hist).score


def predicted_score(net, problem: Problem, constant: bool) -> float:
    """The network's palette for one image, rounded within its cap and finalised (no descent)."""
    from cq.methods.cnn_folder.method import predict, prediction_score

    palette, cap = predict(net, [problem], "cpu", constant=constant)
    return prediction_score(problem, palette[0], float(cap[0]))


def train_network(train_images, args, constant: bool, path: str):
    from cq.methods.cnn_folder.network import Shape
    from cq.methods.cnn_folder.train import TrainConfig, prepare, save, train

    shape = Shape(K)
    config = TrainConfig(epochs=args.epochs, threads=args.threads, constant_input=constant)
    (samples, prep_cpu) = cpu_call(prepare, train_images, shape, config.bits)
    net, facts = train(samples, shape, Weights(), config)
    save(path, net, Weights())
    return net, facts, prep_cpu


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training and the method")
    parser.add_argument("--param", action="append", default=[], help="cnn_folder parameter name=value")
    parser.add_argument("--limit", type=int, default=0, help="test on the first N test photos only (0: all)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; torch threads {args.threads}")
    (train_images, test_images, test_names, text), data_cpu = cpu_call(_folder_photos.split, args.n_train)
    print(f"data: {text} ({data_cpu:.0f} CPU s to load)")
    if args.limit:
        test_images, test_names = test_images[: args.limit], test_names[: args.limit]

    folder = tempfile.mkdtemp(prefix="cq-cnn-folder-")
    net, facts, prep = train_network(train_images, args, False, f"{folder}/net.pt")
    print(f"folder training on {facts['n_images']} photos, {facts['epochs']} epochs, {facts['device']}: "
          f"{facts['cpu_s'] + prep:.0f} CPU s ({prep:.0f} preparing), {facts['wall_s']:.0f} s wall; "
          f"surrogate {facts['loss_curve'][0]:.1f} -> {facts['loss_curve'][-1]:.1f}")
    const_net, const_facts, _ = train_network(train_images, args, True, f"{folder}/constant.pt")
    print(f"ablation network (constant input) trained: {const_facts['cpu_s']:.0f} CPU s\n")

    method, direct = get_method("cnn_folder"), get_method("direct")
    params = {"network": f"{folder}/net.pt", "device": "cpu", "threads": args.threads,
              **{name: ast.literal_eval(value) for name, value in (p.split("=", 1) for p in args.param)}}
    print(f"cnn_folder v{method.version} {params}")
    problems = [Problem(im, ColorHistogram.from_image(np.ascontiguousarray(im)), K) for im in test_images]
    _, first = cpu_call(method.fn, problems[0], **params)
    print(f"first cnn_folder call (imports, network load) {first:.2f} CPU s; not counted below\n")

    header = (f"{'photo':34s} {'pred':>7s} {'const':>7s} {'c-net':>7s} {'final':>7s} "
              f"{'direct':>7s} {'f/dir':>7s} {'cpu cf':>6s} {'cpu dir':>7s}")
    print(f"score / k-aware lower bound\n{header}\n{'-' * len(header)}", flush=True)
    rows = []
    for name, problem in zip(test_names, problems):
        lb = bound.lower_bound(problem.hist, K)
        proposal, cpu_cf = cpu_call(lambda: (p := method.fn(problem, **params), exact(problem, p)))
        proposal, final = proposal
        (d_prop, d_score), cpu_d = cpu_call(lambda: (p := direct.fn(problem), exact(problem, p)))
        e = proposal.extras
        assert final == e["final_score"], (final, e["final_score"])
        row = (predicted_score(net, problem, False) / lb, predicted_score(net, problem, True) / lb,
               predicted_score(const_net, problem, True) / lb, final / lb, d_score / lb, final / d_score, cpu_cf,
               cpu_d)
        rows.append(row)
        short = name if len(name) <= 34 else "..." + name[-31:]
        print(f"{short:34s} " + " ".join(f"{v:7.4f}" for v in row[:6]) + f" {cpu_cf:6.2f} {cpu_d:7.2f}", flush=True)
    cols = [np.array(c) for c in zip(*rows)]
    pred, const, cnet, final, dirr, ratio, cpu_cf, cpu_d = cols
    print("-" * len(header))
    print(f"{'geometric mean':34s} " + " ".join(f"{geomean(c):7.4f}" for c in cols[:6])
          + f" {np.median(cpu_cf):6.2f} {np.median(cpu_d):7.2f}  (CPU: medians)")
    worse_const = min(geomean(const), geomean(cnet)) / geomean(pred) - 1
    ties = int((ratio <= 1 + 1e-12).sum())
    n = len(rows)
    cpu_share = cpu_cf.sum() / cpu_d.sum()
    train_cpu = facts["cpu_s"] + prep
    print(f"\ntargets (issue 21), {n} test photos, {facts['n_images']} training crops:")
    print(f"  prediction alone <= 1.05x bound (geomean):       {geomean(pred):.4f}  {_met(geomean(pred) <= 1.05)}")
    print(f"  constant input >= 2% worse (best of the two):     {worse_const:+.1%}  {_met(worse_const >= 0.02)}")
    print(f"  after the descent <= 1.006x (geomean):            {geomean(final):.4f}  {_met(geomean(final) <= 1.006)}")
    print(f"  no worse than direct on >= half the photos:       {ties}/{n}  {_met(2 * ties >= n)}")
    print(f"  per-image CPU <= half of direct's (total):        {cpu_share:.2f}x  {_met(cpu_share <= 0.5)}")
    print(f"  folder training <= 600 CPU s on {facts['n_images']} photos:        {train_cpu:.0f}  {_met(train_cpu <= 600)}")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
