"""cq: colour quantization to exactly k colours, judged by one objective.

Data flows one way: load -> method -> exact-k finalisation -> write PNG + JSON record.

The public names below are imported on first use (PEP 562), so that ``import cq.discover``
(which the workflow does at every parse, and on a cluster in every job) costs no numpy.
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ColorHistogram": "cq.histogram",
    "Quantization": "cq.finalize", "finalize": "cq.finalize",
    "ImageError": "cq.imageio", "load_image": "cq.imageio", "write_indexed_png": "cq.imageio",
    "Problem": "cq.methods", "Proposal": "cq.methods", "all_methods": "cq.methods",
    "get_method": "cq.methods", "register": "cq.methods",
    "DEFAULT_K": "cq.objective", "Score": "cq.objective", "Weights": "cq.objective",
    "lower_bound": "cq.bound", "lower_bound_any_k": "cq.objective", "score": "cq.objective", "score_assignment": "cq.objective",
    "vertex_cost": "cq.objective",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cq' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])
