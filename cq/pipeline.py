"""One image through one method: load -> method -> exact-k finalisation -> PNG + JSON record.

This is the unit of work of the CLI and of every workflow job. It never raises for a bad
image or a failing method: it writes a record with ``status: error`` and the message (and no
PNG), and returns it, so a batch carries on and the report lists the failure.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cq.finalize import TooFewPixelsError, finalize, too_few_pixels
from cq.freshness import TRANSIENT_ERRNOS, check, job_fingerprint, read_source
from cq.histogram import ColorHistogram
from cq.fsutil import atomic_path
from cq.imageio import DEFAULT_MAX_PIXELS, ImageError, load_image, read_back, write_indexed_png
from cq.config import job_spec
from cq.methods import Problem, Proposal, UnknownMethodError, get_method
from cq import bound
from cq.objective import DEFAULT_K, SCORING_VERSION, Weights, score_indexed
from cq.record import SCHEMA_ID, SCORE_KEYS, SCORE_PARTS, RecordError, now, read_record, versions, write_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadOptions:
    """How input files are read (see cq.imageio): transparency background and pixel limit."""

    background: tuple[int, int, int] | None = (255, 255, 255)
    max_pixels: int | None = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Job:
    """One (image, method) unit: what to run and with which parameters.

    ``name`` is how the result is labelled (a config variant such as ``cnn_fast``);
    ``method`` is the registered base method it runs. ``time_limit_s`` bounds the work on one
    image: past it the job stops and records the overrun as its error.
    """

    method: str
    params: dict = field(default_factory=dict)
    k: int = DEFAULT_K
    weights: Weights = Weights()
    name: str | None = None
    read: ReadOptions = ReadOptions()
    time_limit_s: float | None = None

    @property
    def label(self) -> str:
        return self.name or self.method

    def to_spec(self) -> dict:
        """The job as plain data (:func:`cq.config.job_spec`); the time limit belongs to the
        run, not the job."""
        background = list(self.read.background) if self.read.background else None
        return job_spec(self.method, self.label, self.params, self.k, self.weights.as_dict(),
                        {"background": background, "max_pixels": self.read.max_pixels})

    @classmethod
    def from_spec(cls, spec: dict, time_limit_s: float | None = None) -> Job:
        """The job that :meth:`to_spec` describes, with the run's time limit on one image."""
        background = spec["read"]["background"]
        return cls(method=spec["method"], params=dict(spec["params"]), k=spec["k"],
                   weights=Weights(**spec["weights"]), name=spec["name"],
                   read=ReadOptions(tuple(background) if background else None, spec["read"]["max_pixels"]),
                   time_limit_s=time_limit_s)


class TimeLimitExceeded(Exception):
    """The work on one image ran past the job's time limit."""


@contextmanager
def _time_limit(seconds: float | None):
    """Raise TimeLimitExceeded in this (main) thread after ``seconds``; no limit when None."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise TimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def quantize_file(image_path: str | os.PathLike, png_path: str | os.PathLike,
                  json_path: str | os.PathLike | None, job: Job, *, reuse: bool = False,
                  reuse_errors: bool = False, proposal: Proposal | None = None) -> dict:
    """Quantize one file, write the indexed PNG and the JSON record; return the record.

    Raises only when the record itself cannot be written (a full disk, say): any failure of
    reading or quantizing becomes the record's error.

    With ``reuse``, a current ok record (cq.freshness: :func:`same_job`, same image content,
    its PNG present) is returned as it is and nothing is recomputed: the records themselves
    are the content-addressed cache.
    ``reuse_errors`` keeps a current error record too (a corrupt file), never a transient one
    (a full disk, a time limit: retried).
    ``proposal``: the method's output for this image, computed beforehand in a batch of
    images (:func:`load_problem`); used only if it fits the image as read here.
    """
    if (reuse or reuse_errors) and json_path is not None:
        kept = reusable_record(image_path, png_path, json_path, job, ok=reuse, error=reuse_errors)
        if kept is not None:
            return kept
    t0, c0 = time.perf_counter(), time.process_time()
    record = _base_record(Path(image_path), job)
    if Path(png_path).resolve() == Path(image_path).resolve():
        png_path = None  # never written, never removed: it is the input
    try:
        if png_path is None:
            raise ImageError(f"{image_path}: refusing to write the output over the input")
        # Read once: the recorded stat (taken before) and hash are those of the bytes quantized.
        data, record["image"]["stat"], record["image"]["sha256"] = read_source(image_path)
        loaded = load_image(image_path, background=job.read.background, max_pixels=job.read.max_pixels,
                            data=data)
        height, width = loaded.pixels.shape[:2]
        record["image"].update(notes=list(loaded.notes), width=width, height=height)
        with _time_limit(job.time_limit_s):
            record.update(_quantize(loaded.pixels, png_path, job, proposal))
    except TimeLimitExceeded:
        _fail(record, f"{image_path}: {job.label} exceeded its time limit of {job.time_limit_s:g} s", png_path)
        record["transient"] = True  # retried next night (with the time the job then gets)
    except ImageError as e:
        _fail(record, str(e), png_path)
    except TooFewPixelsError as e:
        _fail(record, f"{image_path}: {e}", png_path)
    except InvariantError as e:
        log.error("%s on %s: %s", job.label, image_path, e)
        _fail(record, f"{image_path}: {job.label}: {e}", png_path)
    except OSError as e:
        _fail(record, f"{image_path}: {e.strerror or e}", png_path)
        record["transient"] = e.errno in TRANSIENT_ERRNOS  # a full disk says nothing of the image
    except MemoryError:
        _fail(record, f"{image_path}: {job.label} ran out of memory", png_path)
        record["transient"] = True
    except Exception as e:  # a method's bug must not stop the batch; the record carries it
        log.exception("%s failed on %s", job.label, image_path)
        _fail(record, f"{image_path}: method {job.label} failed: {type(e).__name__}: {e}", png_path)
    record["wall_time_s"] = time.perf_counter() - t0
    record["cpu_time_s"] = time.process_time() - c0  # all threads: what the image cost on a busy machine
    record["peak_memory_mb"] = peak_memory_mb()
    record["versions"] = versions()
    if json_path is not None:
        write_record(json_path, record)
    return record


def same_job(record: dict, job: Job) -> bool:
    """Whether ``record`` is a result of this very job: the fingerprint of its full spec
    (label, method and code version, parameters with defaults, k, weights, read options,
    scoring version; cq.freshness.job_fingerprint). The one answer to "may it be kept?"."""
    return record.get("job_fingerprint") == job_fingerprint(job)


def reusable_record(image_path, png_path, json_path, job: Job, *, ok: bool, error: bool) -> dict | None:
    """The record at ``json_path`` if it is current (cq.freshness.check: this job, this image
    content, not a transient failure, its PNG present when ok) and of a status asked for. It
    is kept byte for byte: a touched image's new stat is stored by `cq nightly`'s check at
    start (cq.freshness.stale_outputs, under the lock), not here."""
    try:
        record = read_record(json_path)
    except (RecordError, OSError):
        return None
    if not (ok if record["status"] == "ok" else error):
        return None
    current = check(record, image_path, png_path, job_fingerprint(job))[0]
    return record if current else None


def load_problem(image_path, job: Job) -> Problem:
    """What the job's method receives for this file (for a batch of images run at once)."""
    loaded = load_image(image_path, background=job.read.background, max_pixels=job.read.max_pixels)
    return Problem(loaded.pixels, ColorHistogram.from_image(loaded.pixels), job.k, job.weights)


def quantize_array(image: np.ndarray, job: Job, proposal: Proposal | None = None):
    """Run the job's method on an RGB uint8 array (or take its ``proposal``, computed in a
    batch, where it fits this image's histogram); return (quantization, histogram, parts)."""
    method = get_method(job.method)
    reason = method.unavailable_reason()
    if reason:
        raise RuntimeError(reason)
    hist = ColorHistogram.from_image(image)
    if hist.n_pixels < job.k:
        raise TooFewPixelsError(too_few_pixels(hist.n_pixels, job.k))
    params = {**method.defaults, **job.params}
    if proposal is None or (proposal.labels is not None and len(proposal.labels) != hist.n_colors):
        proposal = method.fn(Problem(image, hist, job.k, job.weights), **params)
    q = finalize(hist, proposal.palette, proposal.labels, k=job.k, weights=job.weights, rule=proposal.rule)
    notes = list(q.notes)
    if hist.n_colors < job.k:
        notes.insert(0, f"the image has {hist.n_colors} distinct colours, fewer than k={job.k}: "
                        "pixels of one colour were split between outputs")
    parts = {"params": params, "method_version": method.version, "extras": proposal.extras, "notes": notes,
             "device": str(proposal.extras.get("device", "cpu"))}
    return q, hist, parts


def _quantize(image: np.ndarray, png_path, job: Job, proposal: Proposal | None = None) -> dict:
    """Quantize, write the PNG, and check the written file before the record may say ok."""
    q, hist, parts = quantize_array(image, job, proposal)
    claimed = q.score(hist, job.weights)
    k_aware, any_k = bound.bounds(hist, job.k, job.weights)
    bounds = {"lower_bound": k_aware, "lower_bound_any_k": any_k}
    with atomic_path(png_path) as tmp:
        write_indexed_png(tmp, q.palette, q.index_image(hist))
        s = check_written(tmp, image, claimed, bounds["lower_bound"], job)
    scores = {key: getattr(s, key) for key in SCORE_PARTS}
    scores.update(bounds, gap=s.score / bounds["lower_bound"] - 1.0 if bounds["lower_bound"] > 0 else None)
    return {**parts, "scores": scores, "n_colors": s.n_colors, "palette": q.palette.tolist()}


class InvariantError(AssertionError):
    """A result failed a check that every ok record must pass."""


def check_written(png_path, image: np.ndarray, claimed, bound: float, job: Job):
    """Re-score the PNG as written, independently of the method's figure, and check it.

    The file is read back as a decoder reads it (palette and index image) and scored pixel by
    pixel (exact integer MSE); that score must agree with the method's own histogram figure to
    1e-9, have exactly k colours, and not be below the lower bound. Any violation raises
    InvariantError naming the check.
    """
    try:
        palette, index = read_back(png_path)
    except ValueError as e:
        raise InvariantError(f"invariant: {e}") from e
    if index.shape != image.shape[:2]:
        raise InvariantError(f"invariant: written image is {index.shape}, input {image.shape[:2]}")
    s = score_indexed(image, palette, index, job.weights)
    if s.n_colors != job.k:
        raise InvariantError(f"invariant: written image has {s.n_colors} distinct colours, not k={job.k}")
    if not np.isclose(s.score, claimed.score, rtol=1e-9, atol=0.0):
        raise InvariantError(f"invariant: written image scores {s.score!r}, the method's figure is {claimed.score!r}")
    if s.score < bound * (1 - 1e-12):
        raise InvariantError(f"invariant: score {s.score!r} is below the lower bound {bound!r}")
    return s


def _base_record(image_path: Path, job: Job) -> dict:
    try:
        method = get_method(job.method)
        version, params = method.version, {**method.defaults, **job.params}
    except UnknownMethodError:  # recorded as the job's error by quantize_file
        version, params = "unknown", dict(job.params)
    return {
        "schema": SCHEMA_ID, "status": "ok", "error": None,
        "image": {"path": str(image_path), "sha256": None, "width": None, "height": None, "notes": []},
        "method": job.label, "base_method": job.method, "method_version": version,
        "job_fingerprint": job_fingerprint(job),
        "params": params, "k": job.k, "weights": job.weights.as_dict(),
        "scoring_version": SCORING_VERSION,
        "scores": {key: None for key in SCORE_KEYS},
        "n_colors": None, "palette": [], "notes": [], "extras": {}, "wall_time_s": 0.0,
        "peak_memory_mb": None, "device": "cpu", "versions": {}, "created": now(),
    }


def _fail(record: dict, message: str, png_path) -> None:
    """Mark the record failed and remove any PNG of an earlier run, so none contradicts it."""
    record["status"], record["error"] = "error", message.splitlines()[0] if message else "error"
    if png_path is not None:
        Path(png_path).unlink(missing_ok=True)
