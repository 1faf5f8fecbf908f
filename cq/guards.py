"""Settings that would make a night go wrong, refused before any work, in one line each.

- The results, logs and benchmarks folders may not overlap the input folder in either
  direction (inside it, the outputs would be quantized as inputs the next night; around it,
  a prune or a cleanup could reach the photos).
- Weights must be finite: ``.nan`` or ``.inf`` would pass a ``type: number`` schema and
  write bare NaN, which is not JSON, into every record.
- ``best`` is the folder of the deliverable (cq/best.py), so no method or variant may be
  called that.
"""

from __future__ import annotations

import math
import os


class SettingsError(ValueError):
    """A setting that cannot work; the message is one line naming it."""


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def _overlap(a: str, b: str) -> bool:
    a, b = _real(a), _real(b)
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def check_folders(input_dir: str, **outputs: str) -> None:
    """Raise SettingsError when an output folder (``results_dir=...``) overlaps ``input_dir``."""
    for key, folder in outputs.items():
        if folder and _overlap(folder, input_dir):
            raise SettingsError(f"config: {key} {folder!r} overlaps input_dir {input_dir!r}; "
                                f"put results, logs and benchmarks outside the input folder")


def check_weights(weights: dict) -> None:
    for key, value in weights.items():
        try:
            finite = math.isfinite(float(value))
        except (TypeError, ValueError):
            finite = False
        if not finite or float(value) < 0:
            raise SettingsError(f"config: weights.{key} is {value!r}; a weight must be a finite number >= 0")


def check_method_names(methods) -> None:
    if "best" in methods:
        raise SettingsError("config: methods: 'best' names the folder of the best results; rename it")


def check_config(config: dict, logs_dir: str | None = None, benchmarks_dir: str | None = None) -> None:
    """All of the above on a workflow config (logs and benchmarks as resolved, if given)."""
    check_folders(config["input_dir"], results_dir=config["results_dir"],
                  logs_dir=logs_dir or config.get("logs_dir"),
                  benchmarks_dir=benchmarks_dir or config.get("benchmarks_dir"))
    check_weights(config.get("weights") or {})
    check_method_names(config.get("methods") or ())
