"""Time build_report on N images x 6 methods and print the time and the page's size.

Real records of the bundled photographs (kmeans, median_cut, octree, libimagequant) are
computed once, then copied to N image paths (the originals and PNGs hard-linked, so thumbnails
are really decoded and resized); ``direct`` and ``cnn`` are kmeans records with scaled scores,
``cnn`` with a 300-epoch curve (init score, curve, best score and epoch); about 1% of records are failures. The report is built twice:
cold (every thumbnail written) and warm (thumbnails cached, the usual re-run).

    python bench/report.py [--images 500] [--work DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

from cq.pipeline import Job, quantize_file
from cq.record import read_record
from cq.report import build_report

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
REAL_METHODS = ("kmeans", "median_cut", "octree", "libimagequant")


def real_records(work: Path) -> dict[tuple[str, str], tuple[dict, Path]]:
    """(photo, method) -> (record, its PNG), quantized once into ``work/real`` and reused."""
    out = {}
    for photo in sorted(SAMPLES.rglob("*.jpg")):
        for method in REAL_METHODS:
            png = work / "real" / method / f"{photo.name}.png"
            json_path = png.with_suffix(".json")
            png.parent.mkdir(parents=True, exist_ok=True)
            if png.exists() and json_path.exists():  # a kept --work folder: reuse
                out[photo.name, method] = (read_record(json_path), png)
            else:
                out[photo.name, method] = (quantize_file(photo, png, json_path, Job(method=method)), png)
    return out


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def synthesise(real: dict, n_images: int, root: Path) -> list[dict]:
    """N images x 6 methods of records under ``root/in`` and ``root/results``."""
    shutil.rmtree(root, ignore_errors=True)
    rng = random.Random(0)
    originals = {p.name: p for p in SAMPLES.rglob("*.jpg")}
    photos = sorted({p for p, _ in real})
    records = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        rel = f"batch{i // 100}/img{i:04d} {photo}"
        _link(originals[photo], root / "in" / rel)
        for method, base, factor in [*((m, m, 1.0) for m in REAL_METHODS), ("direct", "kmeans", 0.75),
                                     ("cnn", "kmeans", 0.8)]:
            record, png = copy.deepcopy(real[photo, base][0]), real[photo, base][1]
            record["image"]["path"] = str(root / "in" / rel)
            # each copy its own content hash: thumbnails are keyed by content, and copies of
            # one photo would otherwise share theirs (the bench measures one per image)
            record["image"]["sha256"] = f"{i:064x}"
            record["method"] = method
            if rng.random() < 0.01:
                record.update(status="error", error=f"{rel}: method {method} failed: RuntimeError: synthetic")
            else:
                _link(png, root / "results" / method / f"{rel}.png")
                scale = factor * rng.uniform(0.97, 1.03)
                record["scores"]["score"] *= scale
                record["scores"]["gap"] = record["scores"]["score"] / record["scores"]["lower_bound"] - 1
                if method == "cnn":
                    start = record["scores"]["score"] * 1.6
                    curve = [start - (start - record["scores"]["score"]) * (1 - 0.98 ** e) for e in range(301)]
                    record["extras"] = {"init_score": start, "curve": curve, "best_score": min(curve),
                                        "best_epoch": curve.index(min(curve)), "device": "cuda"}
            records.append(record)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--work", type=Path, help="keep the work here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cq-bench-report-"))
    t0 = time.perf_counter()
    real = real_records(work)
    records = synthesise(real, args.images, work / "synthetic")
    print(f"{len(records)} records ({args.images} images x 6 methods) prepared in {time.perf_counter() - t0:.1f} s")
    out = work / "synthetic" / "report"
    for run in ("cold", "warm"):
        t = time.perf_counter()
        build_report(records, work / "synthetic" / "results", work / "synthetic" / "in",
                     out / "report.csv", out / "report.html")
        print(f"build_report {run}: {time.perf_counter() - t:.2f} s")
    assets = [p for p in (out / "report_files").rglob("*") if p.is_file()]
    print(f"report.html {(out / 'report.html').stat().st_size / 1e6:.2f} MB, "
          f"report.csv {(out / 'report.csv').stat().st_size / 1e6:.2f} MB, "
          f"report_files {len(assets)} files {sum(p.stat().st_size for p in assets) / 1e6:.1f} MB")
    print(f"page: {out / 'report.html'}")
    if args.work is None:
        print("(temporary folder kept for a look; remove it when done)")


if __name__ == "__main__":
    main()
