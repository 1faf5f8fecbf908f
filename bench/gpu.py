"""Check of cnn's and cnn_folder's GPU paths: the bundled photographs and one 20 MP image on cuda,
against the same runs on the CPU.

Per image it prints the device the run recorded (``extras.device``), its wall seconds per image,
the CPU run's wall seconds, the network's start, best epoch and final score (score / any-k lower
bound), the CPU run's final score, and the ratio of the two scores; then batched training (``train_many``) of all photographs at once on the
device, in images per second, against one image at a time. Without a CUDA device it stops with
a message, unless ``--device cpu`` is given: then both runs are on the CPU, which checks the
script itself (and shows the CPU figures) on a machine without a GPU.

cnn_folder (unless ``--no-folder``): its network trained on ``--folder-crops`` random crops of the
photographs (``--folder-epochs``) on the device and on the CPU (wall seconds, last surrogate), then
every photograph predicted (one batched forward pass) and descended from in one call (``run_many``) against one
call per image, in images per second, and the final scores of the device's network and run against
the CPU's (geometric mean of the ratios).
Run: python bench/gpu.py [--device cuda|cpu] [--photos a,b] [--no-big] [--param name=value ...]
     [--no-folder] [--folder-crops 200] [--folder-epochs 30]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _photos import PHOTOS  # noqa: E402
from cnn import exact_score, load, parse_params  # noqa: E402

from cq.histogram import ColorHistogram  # noqa: E402
from cq.methods import Problem, get_method  # noqa: E402
from cq.objective import Weights, lower_bound_any_k  # noqa: E402

K = 37
BIG = (5472, 3648)  # 20 MP


def big_image() -> np.ndarray:
    """A 20 MP photograph: astronaut upscaled (Lanczos) to 5472x3648."""
    image = np.ascontiguousarray(PHOTOS["astronaut"]()[..., :3])
    return np.asarray(Image.fromarray(image).resize(BIG, Image.Resampling.LANCZOS))


def run(problem: Problem, device: str, params: dict):
    """(proposal, wall seconds, exact score) of one cnn call; CUDA is synchronised before timing."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    proposal = get_method("cnn").fn(problem, **{**params, "device": device})
    if device == "cuda":
        torch.cuda.synchronize()
    return proposal, time.perf_counter() - t, exact_score(problem, proposal)


def main(argv=None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                        help="device under test; cpu checks the script where there is no GPU")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated photo names")
    parser.add_argument("--size", default="640x480", help="WIDTHxHEIGHT the photos are resized to")
    parser.add_argument("--no-big", action="store_true", help="skip the 20 MP image")
    parser.add_argument("--param", action="append", default=[], help="cnn parameter name=value")
    parser.add_argument("--no-folder", action="store_true", help="skip the cnn_folder check")
    parser.add_argument("--folder-crops", type=int, default=200, help="cnn_folder training images (crops)")
    parser.add_argument("--folder-epochs", type=int, default=30, help="cnn_folder training epochs")
    args = parser.parse_args(argv)
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check (run with --device cpu to check the script itself)")
        return 2
    params = parse_params(args.param)
    params.pop("device")
    where = torch.cuda.get_device_name(0) if device == "cuda" else "the CPU"
    print(f"torch {torch.__version__}; device under test: {device}, {where}; reference: cpu; params {params}")

    size = tuple(int(v) for v in args.size.split("x"))
    images = {name: load(name, size) for name in args.photos.split(",")}
    if not args.no_big:
        images["astronaut 20 MP"] = big_image()
    warm = next(iter(images.values()))[:24, :32].copy()
    for dev in {device, "cpu"}:  # imports and CUDA context, not counted
        get_method("cnn").fn(Problem(warm, ColorHistogram.from_image(warm), K), epochs=1, device=dev)

    header = (f"{'image':18s} {'pixels':>7s} {'recorded':>8s} {'s/image':>8s} {'cpu run s':>9s} "
              f"{'init':>7s} {'best':>7s} {'final':>7s} {'cpu final':>9s} {'ratio':>7s}")
    print(f"scores / lower bound\n{header}\n{'-' * len(header)}", flush=True)
    problems = []
    for name, image in images.items():
        problem = Problem(image, ColorHistogram.from_image(image), K)
        problems.append(problem)
        bound = lower_bound_any_k(problem.hist)
        test, wall, score = run(problem, device, params)
        _, wall_cpu, score_cpu = run(problem, "cpu", params)
        e = test.extras
        print(f"{name:18s} {image.shape[0] * image.shape[1] / 1e6:6.1f}M {e['device']:>8s} {wall:8.2f} "
              f"{wall_cpu:9.2f} {e['init_score'] / bound:7.4f} {e['best_score'] / bound:7.4f} "
              f"{score / bound:7.4f} {score_cpu / bound:9.4f} {score / score_cpu:7.4f}", flush=True)

    from cq.methods.cnn import make_config, train_many

    photos = problems[:-1] if not args.no_big else problems
    config = make_config(**{k: v for k, v in params.items()})
    t = time.perf_counter()
    for p in photos:
        train_many([p], config, device)
    one = time.perf_counter() - t
    t = time.perf_counter()
    many = train_many(photos, config, device)
    together = time.perf_counter() - t
    n = len(photos)
    print(f"\ntrain_many on {device}, {n} photos: one at a time {n / one:.2f} images/s, "
          f"all at once {n / together:.2f} images/s; devices recorded {sorted({p.extras['device'] for p in many})}")
    if not args.no_folder:
        folder_check(device, photos, args.folder_crops, args.folder_epochs)
    return 0


def _synced(device: str, fn, *args, **kwargs):
    """(result, wall seconds) of one call, CUDA synchronised before and after."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    if device == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def folder_check(device: str, problems, n_crops: int, epochs: int) -> None:
    """cnn_folder's training and batched prediction on ``device`` against the CPU (see the docstring)."""
    import tempfile

    from cq.methods.cnn_folder.method import run_many
    from cq.methods.cnn_folder.network import Shape
    from cq.methods.cnn_folder.train import TrainConfig, prepare, save, train

    rng = np.random.default_rng(0)
    crops = []
    for i in range(n_crops):
        image = problems[i % len(problems)].image
        h, w = image.shape[:2]
        ch, cw = int(h * rng.uniform(0.4, 1.0)), int(w * rng.uniform(0.4, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(np.ascontiguousarray(image[y:y + ch, x:x + cw]))
        crop.thumbnail((320, 320), Image.Resampling.LANCZOS)
        crops.append(np.asarray(crop))
    shape, folder = Shape(K), tempfile.mkdtemp(prefix="cq-gpu-folder-")
    samples = prepare(crops, shape, TrainConfig().bits)
    paths, finals = {}, {}
    print(f"\ncnn_folder on {device} against cpu: network trained on {len(crops)} crops of the photographs, "
          f"{epochs} epochs")
    for dev in dict.fromkeys((device, "cpu")):
        (net, facts), wall = _synced(dev, train, samples, shape, Weights(), TrainConfig(epochs=epochs, threads=2), dev)
        paths[dev] = f"{folder}/{dev}.pt"
        save(paths[dev], net, Weights())
        print(f"  training on {facts['device']}: {wall:.1f} s wall, surrogate {facts['loss_curve'][-1]:.2f}")
    defaults = get_method("cnn_folder").defaults
    for dev, path in paths.items():
        params = {**defaults, "network": path, "device": dev}
        run_many(problems[:1], **params)  # loads the network and warms the device, not counted
        one, wall_one = _synced(dev, lambda: [run_many([p], **params)[0] for p in problems])
        many, wall_all = _synced(dev, lambda: run_many(problems, **params))
        finals[dev] = np.array([p.extras["final_score"] for p in many])
        print(f"  predict + fine-tune + finish on {dev}, {len(problems)} photos: one at a time "
              f"{len(problems) / wall_one:.2f} images/s, batched {len(problems) / wall_all:.2f} images/s; "
              f"devices recorded {sorted({p.extras['device'] for p in many})}")
    if device != "cpu":
        ratio = float(np.exp(np.mean(np.log(finals[device] / finals["cpu"]))))
        print(f"  final score, {device} network and run / cpu network and run: {ratio:.4f} (geometric mean)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
