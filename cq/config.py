"""The workflow's settings, resolved once: folders, reserved names, k, weights, methods and
their jobs' resources. The Snakefile and ``cq nightly`` both call :func:`resolve`, so a bad
setting is refused the same way, in one line (:class:`ConfigError`), before any work.

- The schema (``config/schema.yaml`` of the workflow) checks types; every other key must name
  a registered method (its section of parameters).
- ``colors`` is ``k`` under a name Snakemake's ``--config`` accepts (it refuses one-letter
  keys); when set, it wins. ``--config`` gives nested values as text: :func:`typed` reads them.
- Results, logs and benchmarks may not overlap the input folder in either direction (inside
  it, outputs would be quantized as inputs next night; around it, a prune could reach photos).
- ``best``, ``shards`` and the logs and benchmarks folders are folders of the results, so no
  method or variant may be called so.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from cq.methods import all_methods, get_method
from cq.objective import SCORING_VERSION, Weights

# Keys of a method section or variant that configure the job, not the method, and their defaults.
JOB_KEYS = {"gpu": False, "threads": 1, "mem_mb": 2000, "runtime": 30}
MAX_K = 256  # an indexed PNG holds at most 256 colours
# The largest weight: larger ones overflow the descent's float32 distances (held out: 1e300 made
# direct 4x worse than kmeans, with overflow warnings); only the weights' ratios matter anyway.
MAX_WEIGHT = 1e9
RESERVED = ("best", "shards")
# Of a job's wall time, what the work on an image may use: the rest is for start-up and the
# record, so that an overrun is recorded before a scheduler kills the job at its wall time.
WORK_SHARE, MIN_MARGIN_S = 0.9, 20.0


class ConfigError(ValueError):
    """A setting that cannot work; the message is one line naming it."""


@dataclass(frozen=True)
class Settings:
    """A resolved workflow config: folders (normalized), the method table, the run options."""

    input_dir: str
    results_dir: str
    logs_dir: str
    benchmarks_dir: str
    methods: dict  # column label -> {"spec": job spec, **JOB_KEYS}
    extensions: tuple
    shard_size: object = "auto"
    shard_max_runtime: int = 1440
    prune_deleted: bool = False
    min_image_share: float = 0.5
    terminal: str = "brief"


def load_schema(path: str | os.PathLike) -> dict:
    """The workflow's config schema (YAML; imported here only: `cq quantize` never reads one)."""
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def check_schema(config: dict, schema: dict) -> None:
    """Raise ConfigError naming the first key that the schema refuses (one line)."""
    import jsonschema  # here: `cq quantize` checks no config

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"config: {where}: {error.message}")


def typed(value, schema: dict, root: dict):
    """``value`` with each text scalar read as YAML where ``schema`` takes no text there:
    Snakemake's ``--config`` reads nested values as text (``weights={mse: 1, ...}`` gives
    ``'1'``), and ``null`` too. Text where text is allowed (a folder named ``123``) stays."""
    schema = _deref(schema, root)
    if isinstance(value, (dict, list)):  # the branch of a oneOf/anyOf that takes this kind
        kind = "object" if isinstance(value, dict) else "array"
        branches = [_deref(b, root) for b in schema.get("oneOf") or schema.get("anyOf") or []]
        schema = next((b for b in branches if b.get("type") == kind), schema)
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {key: typed(item, props.get(key, extra if isinstance(extra, dict) else {}), root)
                for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item, schema.get("items", {}), root) for item in value]
    if isinstance(value, str) and not _takes_text(schema, root):
        return _from_text(value)
    if value in ("null", "~") and _takes(schema, root, "null"):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not _takes(schema, root, "integer") \
            and not _takes(schema, root, "number") and _takes(schema, root, "string"):
        return str(value)  # a folder named 123, which Snakemake's --config made a number
    return value


def _deref(schema: dict, root: dict) -> dict:
    """``schema`` with its local ``$ref`` merged in (properties from both)."""
    while "$ref" in schema:
        ref = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        rest = {key: item for key, item in schema.items() if key != "$ref"}
        schema = {**ref, **rest, "properties": {**ref.get("properties", {}), **rest.get("properties", {})}}
    return schema


def _takes_text(schema: dict, root: dict) -> bool:
    """Whether ``schema`` (or a branch of its oneOf/anyOf) accepts a string, or says nothing."""
    for branch in schema.get("oneOf") or schema.get("anyOf") or [schema]:
        branch = _deref(branch, root)
        if _takes(branch, root, "string") or any(isinstance(x, str) for x in [*branch.get("enum", []), branch.get("const")]):
            return True
        if "type" not in branch and "enum" not in branch and "const" not in branch:
            return True
    return False


def _takes(schema: dict, root: dict, kind: str) -> bool:
    """Whether ``schema`` or a branch of its oneOf/anyOf declares JSON type ``kind``."""
    for branch in schema.get("oneOf") or schema.get("anyOf") or [schema]:
        kinds = _deref(branch, root).get("type")
        if kind in (kinds if isinstance(kinds, list) else [kinds]):
            return True
    return False


def _from_text(text: str):
    """``text`` read as a YAML scalar (``'2'`` -> 2, ``'null'`` -> None; ``'1e-3'``, which YAML
    1.1 leaves as text, -> 0.001), or as it is."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def resolve(config: dict, schema: dict) -> Settings:
    """The settings of ``config`` checked against ``schema`` and the method registry."""
    registry = all_methods()
    for key in config:
        if key not in schema["properties"] and key not in registry:
            raise ConfigError(f"config: {key!r} is neither a setting nor a registered method "
                              f"({', '.join(registry)})")
    config = typed(config, schema, schema)
    check_schema(config, schema)
    if config.get("colors") is not None:
        config["k"] = config["colors"]
    results = os.path.normpath(config["results_dir"])
    settings = Settings(
        input_dir=os.path.normpath(config["input_dir"]), results_dir=results,
        logs_dir=os.path.normpath(config.get("logs_dir") or f"{results}/logs"),
        benchmarks_dir=os.path.normpath(config.get("benchmarks_dir") or f"{results}/benchmarks"),
        methods=method_table(config, registry), extensions=tuple(config["extensions"]),
        shard_size=config.get("shard_size", "auto"), shard_max_runtime=config.get("shard_max_runtime", 1440),
        prune_deleted=bool(config.get("prune_deleted", False)),
        min_image_share=float(config.get("min_image_share", 0.5)), terminal=config.get("terminal", "brief"))
    check_folders(settings)
    return settings


def load(config: dict, schema_path: str | os.PathLike) -> Settings:
    """:func:`resolve` against the schema file, and the input folder must exist."""
    settings = resolve(config, load_schema(schema_path))
    if not os.path.isdir(settings.input_dir):
        raise ConfigError(f"config: input_dir {settings.input_dir!r} is not a folder")
    return settings


def check_folders(settings: Settings) -> None:
    """Refuse output folders that overlap the input, and method names that are result folders."""
    for key in ("results_dir", "logs_dir", "benchmarks_dir"):
        if _overlap(getattr(settings, key), settings.input_dir):
            raise ConfigError(f"config: {key} {getattr(settings, key)!r} overlaps input_dir "
                              f"{settings.input_dir!r}; put results, logs and benchmarks outside it")
    folders = {*RESERVED, *(os.path.relpath(d, settings.results_dir) for d in (settings.logs_dir, settings.benchmarks_dir))}
    for label in settings.methods:
        if label in folders:
            raise ConfigError(f"config: methods: {label!r} names a folder of the results; rename it")


def _overlap(a: str, b: str) -> bool:
    a, b = (os.path.realpath(os.path.abspath(p)) for p in (a, b))
    return a == b or a.startswith(b.rstrip(os.sep) + os.sep) or b.startswith(a.rstrip(os.sep) + os.sep)


def check_problem(k, weights: dict) -> None:
    """Refuse a k outside 1..256 or a weight that is not a finite number from 0 to MAX_WEIGHT."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ConfigError(f"config: colors (k) must be an integer from 1 to {MAX_K} "
                          f"(an indexed PNG's limit), not {k!r}")
    for key, value in weights.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not 0 <= value <= MAX_WEIGHT:
            raise ConfigError(f"config: weights: {key} must be a finite number from 0 to {MAX_WEIGHT:g}, not {value!r}")


def check_params(label: str, method, params) -> None:
    """Refuse a parameter that ``method`` does not declare (a misspelt one would be ignored), or
    a value of another type than its default's, not finite, below 0 or outside the method's
    ``limits``: refused before any work, not by a failure on every image."""
    for name, value in params.items():
        if name not in method.defaults:
            known = ", ".join(sorted(method.defaults)) or "no parameters"
            raise ConfigError(f"{label}: unknown parameter {name!r} of method {method.name!r}; "
                              f"it takes: {known}")
        problem = _param_problem(value, method.defaults[name], method.limits.get(name))
        if problem:
            raise ConfigError(f"{label}: parameter {name!r} of method {method.name!r} must be {problem}, not {value!r}")
    if method.check is not None:
        try:
            method.check({**method.defaults, **params})
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{label}: {e}") from None


def _param_problem(value, default, limits: tuple | None) -> str | None:
    """What ``value`` must be, like ``default``, or None when it is acceptable."""
    if limits and all(isinstance(x, str) for x in limits):
        return None if value in limits else f"one of {', '.join(limits)}"
    if isinstance(default, bool) or isinstance(default, (str, list)):
        kind = type(default)
        return None if isinstance(value, kind) else f"a {'boolean' if kind is bool else kind.__name__}"
    integral = isinstance(default, int)
    number = isinstance(value, int if integral else (int, float)) and not isinstance(value, bool)
    if default is None and value is None:
        return None
    lo, hi = limits or (0, None)
    wanted = f"{'an integer' if integral else 'a number'} " + (f"from {lo} to {hi}" if hi is not None else f">= {lo}")
    if default is None:
        wanted += " or null"
    if not number or not math.isfinite(value) or value < lo or (hi is not None and value > hi):
        return wanted
    return None


def _param_from_text(value, default):
    """A method parameter given as text by ``--config`` (see :func:`typed`) read as its default
    is typed: a number, null, or a list of numbers (cnn's ``channels: [4, 8]``)."""
    if isinstance(value, list) and isinstance(default, list):
        return [_param_from_text(item, default[0] if default else "") for item in value]
    return _from_text(value) if isinstance(value, str) and not isinstance(default, str) else value


def _section(label: str, config: dict, registry: dict, variants: dict) -> tuple[str, dict]:
    """(base method name, its section merged with the variant's overrides) for a column label."""
    if label in variants:
        if label in registry:
            raise ConfigError(f"config: variants: {label!r} is also a method name; rename the variant")
        spec = dict(variants[label])
        base = spec.pop("method")
        if base not in registry:
            raise ConfigError(f"config: variants: {label}: method {base!r} is not registered; "
                              f"known: {', '.join(registry)}")
        return base, {**(config.get(base) or {}), **spec}
    if label in registry:
        return label, dict(config.get(label) or {})
    raise ConfigError(f"config: methods: {label!r} is neither a registered method ({', '.join(registry)}) "
                      f"nor a variant ({', '.join(variants) or 'none defined'})")


def method_table(config: dict, registry: dict) -> dict[str, dict]:
    """Column label -> its jobs' ``spec`` and the job settings of :data:`JOB_KEYS`."""
    check_problem(config["k"], config["weights"])
    weights = Weights(**config["weights"]).as_dict()
    read = {"background": list(config["read"]["background"] or []) or None,
            "max_pixels": config["read"]["max_pixels"]}
    table = {}
    for label in config["methods"]:
        base, spec = _section(label, config, registry, config.get("variants") or {})
        spec = {name: _param_from_text(value, registry[base].defaults.get(name, ""))
                for name, value in spec.items()}
        job = {key: spec.pop(key, default) for key, default in JOB_KEYS.items()}
        check_params(f"config: {label}", registry[base], spec)
        if "threads" in registry[base].defaults:  # one knob: the threads the job reserves and uses
            spec["threads"] = job["threads"]
        table[label] = {"spec": job_spec(base, label, spec, config["k"], weights, read), **job}
    return table


def job_spec(method: str, label: str, params: dict, k: int, weights: dict, read: dict) -> dict:
    """A job as plain data (``cq.pipeline.Job.to_spec`` gives it too): method, label, code
    version, parameters with defaults filled in, k, weights, read options and the scoring
    code's version; a change of any makes its records stale (cq.freshness)."""
    registered = get_method(method)
    return {"method": method, "name": label, "version": registered.version,
            "params": dict(sorted({**registered.defaults, **params}.items())), "k": k,
            "weights": dict(weights), "read": dict(read), "scoring_version": SCORING_VERSION}


def unavailable(table: dict) -> list[str]:
    """One line for each method of a resolved table that cannot run here."""
    bases = {entry["spec"]["method"] for entry in table.values()}
    return [reason for name in sorted(bases) if (reason := get_method(name).unavailable_reason())]


def scaled(value: int, attempt: int) -> int:
    """A job's memory or runtime on its ``attempt``-th try: more on each retry."""
    return value * max(1, attempt)


def time_limit_s(runtime_minutes: float) -> float:
    """Seconds the work on one image may take in a job of ``runtime_minutes`` of wall time:
    :data:`WORK_SHARE` of it and at least :data:`MIN_MARGIN_S` less, never under 1 s."""
    wall = runtime_minutes * 60.0
    return max(1.0, min(wall * WORK_SHARE, wall - MIN_MARGIN_S))
