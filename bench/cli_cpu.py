"""Whole-process CPU of ``cq quantize --method direct`` against pngquant, on 640x480 photographs.

    python bench/cli_cpu.py [--rounds 5] [--k 37] [--cq CMD]

Issue 17's target: the command a user types costs no more CPU than ``pngquant --nofs --speed 1``
on the same photograph. Each command runs as its own process, as a user runs it; CPU is that
process's user + system time (``os.wait4``), threads included. pngquant runs OpenMP threads, whose
waiting counts too and grows with the machine's load, so it is also run with ``OMP_NUM_THREADS=1``
(its work alone, column "1 thread"), and the load average is printed. The rounds
alternate the commands, so load changes hit all of them alike; each figure is a median.
``cq quantize --method octree`` is printed as cq's floor: start-up, read, histogram, bound, PNG
written and checked, with a method that costs almost nothing.

Photographs: the JPEGs of Debian's wallpaper packages (``/usr/share/backgrounds``), fitted to
640x480 (downscaled, centre-cropped), and scikit-image's photographs at their own size (all
smaller), written as PNG (pngquant reads PNG only). Python's bytecode is written on a first
untimed run, as after a user's first run (``PYTHONDONTWRITEBYTECODE`` is dropped for the runs).
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

WALLPAPERS = "/usr/share/backgrounds/**/*.jpg"
SIZE = (640, 480)


def photos(folder: Path) -> list[Path]:
    """The bench photographs as PNG files in ``folder``."""
    from _photos import PHOTOS

    out = []
    for source in sorted(glob.glob(WALLPAPERS, recursive=True)):
        image = ImageOps.fit(Image.open(source).convert("RGB"), SIZE, Image.Resampling.LANCZOS)
        out.append(folder / f"{Path(source).stem}.png")
        image.save(out[-1])
    for name, load in PHOTOS.items():
        out.append(folder / f"skimage_{name}.png")
        Image.fromarray(np.asarray(load())[..., :3]).save(out[-1])
    return out


def cpu_seconds(command: list[str], env: dict) -> float:
    """User + system CPU seconds of one run of ``command`` (its threads included); fails loudly."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{shlex.join(command)} failed:\n{stderr.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime


def commands(cq: list[str], image: Path, out: Path, k: int) -> dict[str, list[str]]:
    pngquant = ["pngquant", "--nofs", "--speed", "1", "--force", "--output", str(out / "pq.png"), str(k), str(image)]
    return {
        "pngquant": pngquant,
        "1 thread": ["env", "OMP_NUM_THREADS=1", *pngquant],
        "cq direct": [*cq, "quantize", str(image), str(out / "direct.png"), "--method", "direct", "-k", str(k), "-q"],
        "cq octree": [*cq, "quantize", str(image), str(out / "octree.png"), "--method", "octree", "-k", str(k), "-q"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--k", type=int, default=37)
    parser.add_argument("--cq", default=shutil.which("cq") or f"{sys.executable} -m cq.cli",
                        help="the cq command (default: the installed one)")
    args = parser.parse_args()
    if shutil.which("pngquant") is None:
        raise SystemExit("pngquant is not installed (Debian: apt install pngquant)")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    cq = shlex.split(args.cq)
    version = subprocess.run(["pngquant", "--version"], capture_output=True, text=True).stdout.strip()
    print(f"cq: {args.cq}   pngquant {version}   k = {args.k}, {args.rounds} rounds, medians of CPU s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = photos(tmp)
        cpu_seconds(commands(cq, images[0], tmp, args.k)["cq direct"], env)  # writes the bytecode
        ratios, single = [], []
        print(f"{'photo':28s} {'size':>9s} {'pngquant':>9s} {'1 thread':>9s} {'cq direct':>9s} {'cq octree':>9s}  "
              f"direct/pngquant  direct/1 thread")
        for image in images:
            runs = {name: [] for name in commands(cq, image, tmp, args.k)}
            for _ in range(args.rounds):
                for name, command in commands(cq, image, tmp, args.k).items():
                    runs[name].append(cpu_seconds(command, env))
            med = {name: float(np.median(values)) for name, values in runs.items()}
            ratios.append(med["cq direct"] / med["pngquant"])
            single.append(med["cq direct"] / med["1 thread"])
            size = "x".join(map(str, Image.open(image).size))
            print(f"{image.stem[:28]:28s} {size:>9s} {med['pngquant']:9.3f} {med['1 thread']:9.3f} "
                  f"{med['cq direct']:9.3f} {med['cq octree']:9.3f}  {ratios[-1]:15.2f}  {single[-1]:15.2f}", flush=True)
    for name, r in (("pngquant", np.array(ratios)), ("pngquant on 1 thread", np.array(single))):
        print(f"cq direct / {name}: geometric mean {np.exp(np.log(r).mean()):.2f}, worst {r.max():.2f}; "
              f"cq direct <= it on {(r <= 1).sum()} of {len(r)} photographs")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
