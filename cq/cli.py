"""The ``cq`` command: quantize one image, score a result, list the methods.

Exit status: 0 on success, 1 on failure (one line naming the file), 2 on bad usage (one line:
an unknown method or parameter, k outside 1..256, bad weights). No traceback unless --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys

# One OpenBLAS thread unless the caller chose otherwise, set before numpy loads: cq's matrix
# products have an inner size of 3, where BLAS threads only spin (0.13 s of CPU at numpy's
# import alone, a sixth of a photo's whole run). Snakemake sets the same for each job.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from cq.config import MAX_K, MAX_WEIGHT, ConfigError, check_params  # noqa: E402 (after the BLAS setting)
from cq.methods import UnknownMethodError, all_methods, get_method  # noqa: E402 (after the BLAS setting)
from cq.objective import DEFAULT_K, Weights  # noqa: E402 (after the BLAS setting)

USAGE, FAILURE = 2, 1
# What `cq --help` prints: plain text (the module docstring is for readers of the code).
DESCRIPTION = "Reduce images to exactly k colours and score them: one image at a time, or every night."
EPILOG = """examples:
  cq quantize photo.jpg photo-37.png --method kmeans
  cq score photo.jpg photo-37.png
  cq methods
  cq nightly --config input_dir=/data/photos results_dir=/data/cq

exit status: 0 success, 1 failure (one line naming the file), 2 bad usage.
A whole folder: snakemake --cores 2 (see README.md)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line and exit status 2."""

    def error(self, message):
        _usage_error(f"{self.prog}: {message} (see {self.prog} --help)")


def _usage_error(message: str):
    print(f"cq: error: {message}", file=sys.stderr)
    sys.exit(USAGE)


def _k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= k <= MAX_K:
        raise argparse.ArgumentTypeError(f"k must be from 1 to {MAX_K} (an indexed PNG's limit), not {k}")
    return k


def _weights(text: str) -> Weights:
    try:
        mse, max_cost, mean_cost = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers MSE,MAX,MEAN, got {text!r}") from None
    if not all(math.isfinite(w) and 0 <= w <= MAX_WEIGHT for w in (mse, max_cost, mean_cost)):
        raise argparse.ArgumentTypeError(f"weights must be finite numbers from 0 to {MAX_WEIGHT:g}, got {text!r}")
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
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an unexpected error")
    p = _Parser(prog="cq", description=DESCRIPTION, epilog=EPILOG, parents=[debug],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    q = sub.add_parser("quantize", help="reduce one image to exactly k colours", parents=[debug])
    q.add_argument("input", help="the image to reduce")
    q.add_argument("output", help="indexed PNG to write")
    q.add_argument("--method", required=True, help="a method or variant name (cq methods lists them)")
    q.add_argument("-k", "--k", "--colors", dest="k", type=_k, default=DEFAULT_K,
                   help=f"colours, 1 to {MAX_K} (default {DEFAULT_K}); --colors as the workflow's setting")
    q.add_argument("--json", help="where to write the result record")
    q.add_argument("--weights", type=_weights, default=Weights(), help="MSE,MAX,MEAN (default 2,21,42)")
    q.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="a method parameter (JSON value), repeatable; cq methods lists them")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    s = sub.add_parser("score", help="score a quantized image against its original", parents=[debug])
    s.add_argument("original", help="the image before quantization")
    s.add_argument("quantized", help="the quantized image, of the same size")
    s.add_argument("--weights", type=_weights, default=Weights(), help="MSE,MAX,MEAN (default 2,21,42)")
    sub.add_parser("methods", help="list the methods, their parameters and whether they can run here",
                   parents=[debug])
    sub.add_parser("nightly", help="one unattended run over a folder, under a lock (cq nightly --help)", add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["nightly"]:  # the nightly run (cq/nightly.py), with its own options
        from cq.nightly import main as nightly
        return nightly(argv[1:])
    args = _parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        return {"quantize": _quantize, "score": _score, "methods": _methods}[args.command](args, debug)
    except (UnknownMethodError, ConfigError) as e:
        _usage_error(str(e))
    except BrokenPipeError:  # `cq score ... | head`: the reader left; nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's own flush at exit too
        return FAILURE
    except Exception as e:
        if debug:
            raise
        from cq.imageio import ImageError

        if isinstance(e, (ImageError, OSError, ValueError)):
            print(f"cq: error: {e}", file=sys.stderr)
        else:
            print(f"cq: error: {type(e).__name__}: {e} (run with --debug for the traceback)", file=sys.stderr)
        return FAILURE


def _log_to_stderr(debug: bool) -> None:
    """Progress (INFO) on stderr, one line a message: a traceback only with --debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if not debug:
        handler.addFilter(lambda record: setattr(record, "exc_info", None) or True)
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def _quantize(args, debug: bool) -> int:
    from cq.pipeline import Job, quantize_file

    method = get_method(args.method)  # an unknown name or parameter stops here, before any work
    check_params("--param", method, dict(args.param))
    _check_paths(args.json, args.input, args.output)
    if args.quiet:  # not even a failure's log (Python's last-resort handler prints tracebacks)
        logging.getLogger().addHandler(logging.NullHandler())
    else:
        _log_to_stderr(debug)
    job = Job(method=args.method, params=dict(args.param), k=args.k, weights=args.weights)
    record = quantize_file(args.input, args.output, args.json, job)
    if record["status"] != "ok":
        print(f"cq: error: {record['error']}", file=sys.stderr)
        return FAILURE
    s = record["scores"]
    # A bound of 0 (weights without the cost terms, every pixel on a cube corner) has no gap.
    gap = f"gap {s['gap']:.2%} to" if s["gap"] is not None else "no gap to"
    print(f"{args.output}: {record['n_colors']} colours, score {s['score']:.2f} "
          f"({gap} the lower bound {s['lower_bound']:.2f}), {record['wall_time_s']:.2f} s")
    return 0


def _check_paths(record: str | None, image: str, png: str) -> None:
    """Refuse, before any work, an output or --json that is a folder, and a --json naming the
    input or the output PNG (the record would overwrite it)."""
    for option, path in (("output", png), ("--json", record)):
        if path is not None and os.path.isdir(path):
            raise ConfigError(f"{option} {path!r} is a folder; name a file")
    for what, path in (("the input image", image), ("the output PNG", png)):
        if record is not None and os.path.realpath(record) == os.path.realpath(path):
            raise ConfigError(f"--json {record!r} is {what}; name another file for the record")


def _score(args, debug: bool) -> int:
    from cq.histogram import ColorHistogram
    from cq.imageio import load_image
    from cq.bound import bounds
    from cq.objective import score

    original = load_image(args.original).pixels
    quantized = load_image(args.quantized).pixels
    if original.shape != quantized.shape:
        raise ValueError(f"{args.quantized}: size {quantized.shape[1]}x{quantized.shape[0]} differs from "
                         f"{args.original}'s {original.shape[1]}x{original.shape[0]}")
    s = score(original, quantized, args.weights)
    hist = ColorHistogram.from_image(original, with_inverse=False)
    lb, any_k = bounds(hist, s.n_colors, args.weights)  # the bound for outputs of as many colours
    for key, value in s.as_dict().items():
        print(f"{key:18s} {value:.6f}" if isinstance(value, float) else f"{key:18s} {value}")
    print(f"{'lower_bound':18s} {lb:.6f}\n{'lower_bound_any_k':18s} {any_k:.6f}")
    print(f"{'gap':18s} {s.score / lb - 1:.6f}" if lb > 0 else f"{'gap':18s} -")
    return 0


def _accepted(limits: tuple) -> str:
    """A parameter's limits as ``cq methods`` shows them: the texts accepted, or the range."""
    return "|".join(limits) if all(isinstance(x, str) for x in limits) else "{}..{}".format(*limits)


def _methods(args, debug: bool) -> int:
    for name, method in all_methods().items():
        reason = method.unavailable_reason()
        params = ", ".join(f"{k}={v!r}" + (f" ({_accepted(method.limits[k])})" if k in method.limits else "")
                           for k, v in sorted(method.defaults.items())) or "no parameters"
        print(f"{name:14s} v{method.version}  " + ("available" if reason is None else f"unavailable: {reason}"))
        print(f"{'':14s} {params}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
