"""The registry of quantization methods.

A method is a plain function ``fn(problem: Problem, **params) -> Proposal`` registered by name
with :func:`register`. Every module of this package is imported on first use, so adding a
method means adding one module here: the workflow's config schema takes any registered
method's section, and :func:`resolve` checks its parameters against the declared defaults.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cq.histogram import ColorHistogram
from cq.objective import SCORING_VERSION, Weights


@dataclass(frozen=True)
class Problem:
    """What every method receives: the image, its colour histogram, k and the weights."""

    image: np.ndarray
    hist: ColorHistogram
    k: int
    weights: Weights = Weights()


@dataclass
class Proposal:
    """What a method returns, before exactly-k finalisation.

    palette : (m, 3) colours (floats or uint8), m about k.
    labels : (n,) palette index per histogram colour, or None to assign by ``rule``.
    rule : ``nearest`` or ``objective``, the assignment used when ``labels`` is None.
    extras : method-specific facts for the record (device, training curve, ...).
    """

    palette: np.ndarray
    labels: np.ndarray | None = None
    rule: str = "nearest"
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registered method: its function, code version and default parameters."""

    name: str
    fn: Callable[..., Proposal]
    version: str
    defaults: dict
    requires: tuple[str, ...] = ()
    # Optional: ``batch(problems, **params) -> (proposals, images per call)`` runs many images
    # at once (cnn on a GPU); the shard mode uses it when it takes more than one image a call.
    batch: Callable[..., list[Proposal]] | None = None
    batch_size: Callable[..., int] | None = None

    def unavailable_reason(self) -> str | None:
        """None when the method can run here, else one line saying what is missing."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                return f"method {self.name!r} needs the Python package {module!r}, which is not installed"
        return None


_REGISTRY: dict[str, Method] = {}
_loaded = False


class UnknownMethodError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, *, version: str, requires: tuple[str, ...] = (), **defaults):
    """Decorator: register ``fn`` as method ``name`` with its code version and defaults.

    Bump ``version`` whenever the method's output changes, so that workflows recompute it.
    """

    def wrap(fn):
        _REGISTRY[name] = Method(name, fn, version, defaults, requires)
        return fn

    return wrap


def register_batch(name: str, *, size: Callable[..., int]):
    """Decorator: ``fn(problems, **params) -> [Proposal]`` runs method ``name`` on many images
    at once, as many as ``size(**params)`` per call (1: no batching pays here)."""

    def wrap(fn):
        method = _REGISTRY[name]
        _REGISTRY[name] = Method(method.name, method.fn, method.version, method.defaults, method.requires,
                                 batch=fn, batch_size=size)
        return fn

    return wrap


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def all_methods() -> dict[str, Method]:
    """Every registered method by name, available here or not."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    """The method registered as ``name``; UnknownMethodError lists the known ones."""
    methods = all_methods()
    if name not in methods:
        raise UnknownMethodError(f"unknown method {name!r}; known: {', '.join(methods)}")
    return methods[name]


# --- the workflow's method table --------------------------------------------------------

# Keys of a method section or variant that configure the job, not the method, and their defaults.
JOB_KEYS = {"gpu": False, "threads": 1, "mem_mb": 2000, "runtime": 30}
MAX_K = 256  # an indexed PNG holds at most 256 colours
# Of a job's wall time (its runtime resource), what the work on an image may use: the rest is
# for start-up and writing the record, so that an overrun is recorded before a scheduler kills
# the job at its wall time.
WORK_SHARE, MIN_MARGIN_S = 0.9, 20.0


class ConfigError(ValueError):
    """A setting of the workflow's config that cannot run; the message names the key."""


def check_params(label: str, method: Method, params) -> None:
    """Refuse a parameter that ``method`` does not declare among its defaults, naming it: a
    misspelt name would otherwise be silently ignored (or passed to a ``**kwargs`` function)."""
    for name in params:
        if name not in method.defaults:
            known = ", ".join(sorted(method.defaults)) or "no parameters"
            raise ConfigError(f"{label}: unknown parameter {name!r} of method {method.name!r}; "
                              f"it takes: {known}")


def check_problem(k, weights: dict) -> None:
    """Refuse a k outside 1..256 or a weight that is negative or not a finite number."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"k must be an integer from 1 to {MAX_K} (an indexed PNG's limit), not {k!r}")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"weights: {key} must be a finite number >= 0, not {value!r}")


def scaled(value: int, attempt: int) -> int:
    """A job's memory or runtime on its ``attempt``-th try (1, 2, ...): more on each retry, so
    that a job killed for running out of it can succeed."""
    return value * max(1, attempt)


def time_limit_s(runtime_minutes: float) -> float:
    """Seconds the work on one image may take in a job of ``runtime_minutes`` of wall time:
    :data:`WORK_SHARE` of it and at least :data:`MIN_MARGIN_S` less, never under 1 s, so the
    job's own limit fires, and its error record is written, before the scheduler's does."""
    wall = runtime_minutes * 60.0
    return max(1.0, min(wall * WORK_SHARE, wall - MIN_MARGIN_S))


def _section(label: str, config: dict, registry: dict, variants: dict) -> tuple[str, dict]:
    """(base method name, its section merged with the variant's overrides) for a column label."""
    if label in variants:
        if label in registry:
            raise ConfigError(f"variants: {label!r} is also a method name; rename the variant")
        spec = dict(variants[label])
        base = spec.pop("method")
        if base not in registry:
            raise ConfigError(f"variants: {label}: method {base!r} is not registered; "
                              f"known: {', '.join(registry)}")
        return base, {**(config.get(base) or {}), **spec}
    if label in registry:
        return label, dict(config.get(label) or {})
    raise ConfigError(f"methods: {label!r} is neither a registered method ({', '.join(registry)}) "
                      f"nor a variant ({', '.join(variants) or 'none defined'})")


def resolve(config: dict, settings=()) -> dict[str, dict]:
    """Column label -> its jobs' ``spec`` (see ``cq.pipeline.Job.to_spec``) and the job
    settings of :data:`JOB_KEYS`, for every label in ``config["methods"]``.

    Every key of ``config`` other than the workflow's ``settings`` (the schema's properties)
    is a method's section. Raises ConfigError on a section, method, variant or parameter that
    is unknown, or a bad k or weight, before any work. A method that cannot run here (a
    missing package) is kept: its jobs write error records that say so.
    """
    registry = all_methods()
    variants = config.get("variants") or {}
    for key in config:
        if settings and key not in settings and key not in registry:
            raise ConfigError(f"{key!r} is neither a setting nor a registered method "
                              f"({', '.join(registry)})")
    check_problem(config["k"], config["weights"])
    weights = Weights(**config["weights"]).as_dict()
    read = {"background": list(config["read"]["background"] or []) or None,
            "max_pixels": config["read"]["max_pixels"]}
    table = {}
    for label in config["methods"]:
        base, spec = _section(label, config, registry, variants)
        method = registry[base]
        settings = {key: spec.pop(key, default) for key, default in JOB_KEYS.items()}
        check_params(label, method, spec)
        if "threads" in method.defaults:  # one knob: the threads the job reserves and uses
            spec["threads"] = settings["threads"]
        table[label] = {"spec": job_spec(base, label, spec, config["k"], weights, read), **settings}
    return table


def job_spec(method: str, label: str, params: dict, k: int, weights: dict, read: dict) -> dict:
    """A job as plain data, the one form of it (``cq.pipeline.Job.to_spec`` gives it too):
    method, label, code version, parameters with the method's defaults filled in, k, weights,
    read options and the scoring code's version. As a workflow rule's parameter, a change of
    any of them reruns its jobs (a fix of the score recomputes every record it touched)."""
    registered = get_method(method)
    return {"method": method, "name": label, "version": registered.version,
            "params": dict(sorted({**registered.defaults, **params}.items())), "k": k,
            "weights": dict(weights), "read": dict(read), "scoring_version": SCORING_VERSION}


def unavailable(table: dict) -> list[str]:
    """One line for each method of a resolved table that cannot run here."""
    bases = {entry["spec"]["method"] for entry in table.values()}
    return [reason for name in sorted(bases) if (reason := get_method(name).unavailable_reason())]
