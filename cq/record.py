"""The result record: one JSON per (image, method), defined and validated here only.

A failed run writes a record too (``status: error`` with the message), so that a report can
list every bad image next to the good ones.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path


from cq.fsutil import atomic_write_bytes

SCHEMA_ID = "cq.record/2"

# The parts of the score (cq.objective.Score), then the bounds and the gap: every record's
# ``scores`` holds exactly these keys. lower_bound knows k; lower_bound_any_k does not.
SCORE_PARTS = ("score", "mse", "mean_cost", "max_cost", "palette_score", "palette_mean_cost")
SCORE_KEYS = SCORE_PARTS + ("lower_bound", "lower_bound_any_k", "gap")

_NUM = {"type": ["number", "null"]}

RECORD_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schema", "status", "error", "image", "method", "base_method", "method_version",
                 "params", "k", "weights", "scoring_version", "scores", "n_colors", "palette", "wall_time_s",
                 "peak_memory_mb", "device", "versions", "created"],
    "properties": {
        "schema": {"const": SCHEMA_ID},
        "status": {"enum": ["ok", "error"]},
        "error": {"type": ["string", "null"]},
        "image": {
            "type": "object",
            "required": ["path", "sha256", "width", "height", "notes"],
            "properties": {
                "path": {"type": "string"},
                # Lengths, not {64} in the pattern: "$" matches before a final newline.
                "sha256": {"type": ["string", "null"], "pattern": "^[0-9a-f]+$", "minLength": 64, "maxLength": 64},
                "width": {"type": ["integer", "null"]},
                "height": {"type": ["integer", "null"]},
                "notes": {"type": "array", "items": {"type": "string"}},
            },
        },
        "method": {"type": "string"},
        "base_method": {"type": "string"},
        "method_version": {"type": "string"},
        "params": {"type": "object"},
        "k": {"type": "integer", "minimum": 1},
        "weights": {
            "type": "object",
            "required": ["mse", "max_cost", "mean_cost"],
            "properties": {w: {"type": "number"} for w in ("mse", "max_cost", "mean_cost")},
        },
        "scoring_version": {"type": "string"},
        "scores": {"type": "object", "required": list(SCORE_KEYS), "properties": {s: _NUM for s in SCORE_KEYS}},
        "n_colors": {"type": ["integer", "null"]},
        "palette": {
            "type": "array",
            "items": {"type": "array", "minItems": 3, "maxItems": 3,
                      "items": {"type": "integer", "minimum": 0, "maximum": 255}},
        },
        "notes": {"type": "array", "items": {"type": "string"}},
        "extras": {"type": "object"},
        "wall_time_s": {"type": "number", "minimum": 0},
        "cpu_time_s": {"type": "number", "minimum": 0},  # optional: records before it lack it
        "peak_memory_mb": {"type": ["number", "null"]},
        "device": {"type": "string"},
        "versions": {"type": "object", "additionalProperties": {"type": "string"}},
        "created": {"type": "string"},
    },
}


@functools.cache
def _compiled():
    """The schema compiled to Python code (fastjsonschema), built once and only when a record
    is checked. Every record is checked three times a run (written, reported, indexed for
    best/): jsonschema's walk took 0.65 ms a record and its import 0.1 s in every job;
    the compiled check takes 0.09 ms and its import 0.01 s."""
    import fastjsonschema

    return fastjsonschema.compile(RECORD_SCHEMA)


class RecordError(ValueError):
    """A record file is missing, unreadable or does not match the schema."""


def versions() -> dict[str, str]:
    """Versions of cq and of the libraries that shaped a result (torch only when loaded)."""
    import numpy
    import PIL

    from cq import __version__

    out = {"cq": __version__, "python": platform.python_version(), "numpy": numpy.__version__,
           "pillow": PIL.__version__}
    if "torch" in sys.modules:
        out["torch"] = sys.modules["torch"].__version__
    return out


def now() -> str:
    """This moment in UTC, to the microsecond: which records a run computed is told by it."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def validate(record: dict, source: str = "record") -> dict:
    """Return ``record`` if it matches the schema, else raise RecordError naming ``source``
    and the first field found wrong."""
    import fastjsonschema

    try:
        _compiled()(record)
    except fastjsonschema.JsonSchemaValueException as e:
        where = "/".join(e.path[1:]) or "(top)"  # e.path starts with "data", the record
        raise RecordError(f"{source}: invalid record at {where}: {e.message}") from None
    return record


def write_record(path: str | os.PathLike, record: dict) -> None:
    """Validate and write ``record`` atomically as pretty JSON."""
    validate(record, str(path))
    text = json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False)  # NaN is not JSON
    atomic_write_bytes(path, (text + "\n").encode())


def read_record(path: str | os.PathLike) -> dict:
    """Read and validate one record file."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: cannot read record ({e})") from e
    return validate(record, str(path))


def load_or_stub(path: str | os.PathLike, image: str, method: str, input_dir: str, *, trusted: bool = False) -> dict:
    """The record at ``path`` (``trusted``: this very version was validated already, see
    cq.best.is_valid), or, when it cannot be read, an error stub naming its image and method
    that the report lists like any error."""
    try:
        if trusted:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        return read_record(path)
    except (RecordError, OSError, ValueError) as e:
        return {"status": "error", "error": str(e), "method": method, "image": {"path": f"{input_dir}/{image}"}}


def describe(record: dict) -> str:
    """A record in a few words, for a job's log."""
    return f"{record['status']} " + (record["error"] or f"score {record['scores']['score']:.2f}")
