"""cq: colour quantization to exactly k colours, judged by one objective.

Data flows one way: load -> method -> exact-k finalisation -> write PNG + JSON record.
"""

from cq.finalize import Quantization, finalize
from cq.histogram import ColorHistogram
from cq.imageio import ImageError, load_image, write_indexed_png
from cq.methods import Problem, Proposal, all_methods, get_method, register
from cq.objective import DEFAULT_K, Score, Weights, lower_bound, score, score_assignment, vertex_cost

__version__ = "0.1.0"

__all__ = [
    "ColorHistogram", "DEFAULT_K", "ImageError", "Problem", "Proposal", "Quantization", "Score",
    "Weights", "all_methods", "finalize", "get_method", "load_image", "lower_bound", "register",
    "score", "score_assignment", "vertex_cost", "write_indexed_png",
]
