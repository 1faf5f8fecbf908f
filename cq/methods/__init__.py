"""The registry of quantization methods.

A method is a plain function ``fn(problem: Problem, **params) -> Proposal`` registered by name
with :func:`register`. Every module of this package is imported on first use, so adding a
method means adding one module here: the workflow's config schema takes any registered
method's section, and :func:`resolve` checks its parameters against the declared defaults.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cq.histogram import ColorHistogram
from cq.objective import Weights


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
    # Optional: parameter -> (least, greatest) value accepted, or the texts accepted
    # (cq.config.check_params); every numeric parameter must be finite and >= 0 in any case.
    limits: dict = field(default_factory=dict)
    # Optional: ``check(params)`` raises ValueError on values that only fail together (cnn's
    # input size and channels), run with the limits before any work.
    check: Callable[[dict], None] | None = None

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


def register(name: str, *, version: str, requires: tuple[str, ...] = (), limits: dict | None = None,
             check: Callable[[dict], None] | None = None, **defaults):
    """Decorator: register ``fn`` as method ``name`` with its code version and defaults, the
    ``limits`` of parameters whose range the type does not say, and a ``check`` of them all.

    Bump ``version`` whenever the method's output changes, so that workflows recompute it.
    """

    def wrap(fn):
        _REGISTRY[name] = Method(name, fn, version, defaults, requires, limits=dict(limits or {}), check=check)
        return fn

    return wrap


def register_batch(name: str, *, size: Callable[..., int]):
    """Decorator: ``fn(problems, **params) -> [Proposal]`` runs method ``name`` on many images
    at once, as many as ``size(**params)`` per call (1: no batching pays here)."""

    def wrap(fn):
        method = _REGISTRY[name]
        _REGISTRY[name] = Method(method.name, method.fn, method.version, method.defaults, method.requires,
                                 batch=fn, batch_size=size, limits=method.limits, check=method.check)
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
