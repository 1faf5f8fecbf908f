"""What ``snakemake --report`` shows beyond the CSV and the summary: each image's best output.

Snakemake's report takes files from rule outputs marked with ``report()``; the best outputs
live in ``best/``, which the run's end hook keeps, not a rule. So the report rule also writes
a folder ``{method}/{image}.png`` (the result's own naming, long names shortened) holding, per
image, the output of the winning method (the first in method order on a tie), which the rule
marks ``report(directory(...), patterns=["{method,[^/]+}/{image}.png"], ...)``. Files are
hard links to the results where the file system allows (no copy), and the folder is replaced
as a whole, so a reader never sees half of it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from cq.discover import result_path
from cq.report.assets import quantized_png


def best_outputs(table: pd.DataFrame, methods: list[str]) -> dict[str, str]:
    """image -> the method whose output is its best (the first of ``methods`` on a tie)."""
    rank = {m: i for i, m in enumerate(methods)}
    best = table[(table["status"] == "ok") & table["best"].astype(bool)]
    best = best.assign(_rank=best["method"].map(lambda m: rank.get(m, len(rank))))
    first = best.sort_values(["image", "_rank", "method"]).drop_duplicates("image")  # one sort, not one per image
    return dict(zip(first["image"], first["method"]))


def write_best_folder(table: pd.DataFrame, methods: list[str], results_dir: Path, folder: Path) -> int:
    """Replace ``folder`` with the best output of each image; return how many it holds."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    count = 0
    try:
        for image, method in best_outputs(table, methods).items():
            source = quantized_png(Path(results_dir), method, image)
            if source is None or not source.is_file():
                continue
            target = Path(result_path(str(staging), method, image, ".png"))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:  # another file system, or no hard links there
                shutil.copyfile(source, target)
            count += 1
        _replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return count


def _replace_folder(new: Path, folder: Path) -> None:
    """Put ``new`` at ``folder``: the old one is renamed away first, then deleted."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
        os.replace(folder, old / folder.name)
    os.replace(new, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
