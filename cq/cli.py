"""The ``cq`` command: quantize one image, score a result, list the methods.

Exit status: 0 on success, 1 on failure (one line naming the file), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from cq.imageio import ImageError, load_image
from cq.histogram import ColorHistogram
from cq.methods import UnknownMethodError, all_methods, get_method
from cq.objective import DEFAULT_K, Weights, lower_bound, score
from cq.pipeline import Job, quantize_file


def _weights(text: str) -> Weights:
    try:
        mse, max_cost, mean_cost = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers MSE,MAX,MEAN, got {text!r}") from None
    return Weights(mse, max_cost, mean_cost)


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cq", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quantize", help="reduce one image to exactly k colours")
    q.add_argument("input")
    q.add_argument("output", help="indexed PNG to write")
    q.add_argument("--method", required=True)
    q.add_argument("--k", type=int, default=DEFAULT_K)
    q.add_argument("--json", help="where to write the result record")
    q.add_argument("--weights", type=_weights, default=Weights(), help="MSE,MAX,MEAN (default 2,21,42)")
    q.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter (JSON value), repeatable")
    q.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s = sub.add_parser("score", help="score a quantized image against its original")
    s.add_argument("original")
    s.add_argument("quantized")
    s.add_argument("--weights", type=_weights, default=Weights())
    sub.add_parser("methods", help="list the methods and whether they can run here")
    sub.add_parser("nightly", help="the nightly run under cq's lock (cq nightly --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nightly"]:  # the nightly run (cq/nightly.py), with its own options
        from cq.nightly import main as nightly
        return nightly(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return {"quantize": _quantize, "score": _score, "methods": _methods}[args.command](args)
    except (ImageError, UnknownMethodError, OSError, ValueError) as e:
        print(f"cq: error: {e}", file=sys.stderr)
        return 1


def _quantize(args) -> int:
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    get_method(args.method)  # an unknown name fails here, before any work
    job = Job(method=args.method, params=dict(args.param), k=args.k, weights=args.weights)
    record = quantize_file(args.input, args.output, args.json, job)
    if record["status"] != "ok":
        print(f"cq: error: {record['error']}", file=sys.stderr)
        return 1
    s = record["scores"]
    print(f"{args.output}: {record['n_colors']} colours, score {s['score']:.2f} "
          f"(gap {s['gap']:.2%} to the lower bound {s['lower_bound']:.2f}), {record['wall_time_s']:.2f} s")
    return 0


def _score(args) -> int:
    original = load_image(args.original).pixels
    quantized = load_image(args.quantized).pixels
    if original.shape != quantized.shape:
        raise ValueError(f"{args.quantized}: size {quantized.shape[1]}x{quantized.shape[0]} differs from "
                         f"{args.original}'s {original.shape[1]}x{original.shape[0]}")
    s = score(original, quantized, args.weights)
    lb = lower_bound(ColorHistogram.from_image(original, with_inverse=False), args.weights)
    for key, value in s.as_dict().items():
        print(f"{key:18s} {value:.6f}" if isinstance(value, float) else f"{key:18s} {value}")
    print(f"{'lower_bound':18s} {lb:.6f}\n{'gap':18s} {s.score / lb - 1:.6f}")
    return 0


def _methods(args) -> int:
    for name, method in all_methods().items():
        reason = method.unavailable_reason()
        print(f"{name:14s} v{method.version}  " + ("available" if reason is None else f"unavailable: {reason}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
