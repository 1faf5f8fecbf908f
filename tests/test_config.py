"""The workflow's settings (cq.config.resolve): one resolver for the Snakefile and `cq nightly`."""

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from cq.config import ConfigError, load_schema, resolve, unavailable
from cq.methods import get_method
from cq.objective import Weights
from cq.pipeline import Job, ReadOptions

SCHEMA = load_schema(REPO / "config/schema.yaml")


def workflow_config(**over) -> dict:
    """The repository's config/config.yaml with ``over`` applied."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return {**config, **over}


def test_resolve_gives_each_column_its_spec_and_job_settings():
    config = workflow_config(methods=["kmeans", "kmeans_8init", "cnn"], kmeans={"n_init": 2, "mem_mb": 900},
                             variants={"kmeans_8init": {"method": "kmeans", "n_init": 8, "runtime": 5}})
    table = resolve(config, SCHEMA).methods
    assert list(table) == ["kmeans", "kmeans_8init", "cnn"]
    kmeans = get_method("kmeans")
    assert table["kmeans"]["spec"] == Job(method="kmeans", params={"n_init": 2}).to_spec()
    assert table["kmeans"]["spec"]["params"] == {**kmeans.defaults, "n_init": 2}
    assert table["kmeans"]["spec"]["version"] == kmeans.version
    assert (table["kmeans"]["mem_mb"], table["kmeans"]["runtime"], table["kmeans"]["gpu"]) == (900, 30, False)
    # A variant: the method's section, then its own overrides.
    assert table["kmeans_8init"]["spec"]["name"] == "kmeans_8init"
    assert table["kmeans_8init"]["spec"]["params"]["n_init"] == 8
    assert (table["kmeans_8init"]["mem_mb"], table["kmeans_8init"]["runtime"]) == (900, 5)
    # cnn takes the job's threads as its own parameter: one knob.
    assert table["cnn"]["threads"] == 2 and table["cnn"]["spec"]["params"]["threads"] == 2


def test_a_spec_round_trips_to_the_same_job():
    job = Job(method="kmeans", params={"n_init": 2}, k=12, weights=Weights(1, 2, 3), name="km",
              read=ReadOptions(None, 1000))
    again = Job.from_spec(job.to_spec(), time_limit_s=9)
    assert again.to_spec() == job.to_spec() and again.time_limit_s == 9
    assert (again.label, again.k, again.weights, again.read) == ("km", 12, Weights(1, 2, 3), ReadOptions(None, 1000))


def test_colors_is_k_under_a_name_snakemake_accepts_and_wins_when_set():
    assert resolve(workflow_config(colors=16), SCHEMA).methods["kmeans"]["spec"]["k"] == 16
    assert resolve(workflow_config(k=12), SCHEMA).methods["kmeans"]["spec"]["k"] == 12
    assert resolve(workflow_config(k=12, colors=None), SCHEMA).methods["kmeans"]["spec"]["k"] == 12


@pytest.mark.parametrize("over, message", [
    ({"kmeans": {"n_inits": 3}}, "unknown parameter 'n_inits' of method 'kmeans'"),
    ({"direct": {"lattice_cap": float("nan")}}, "parameter 'lattice_cap' of method 'direct' must be a number from 0 to 8"),
    ({"kmeans": {"seed": -1}}, "parameter 'seed' of method 'kmeans' must be an integer from 0 to"),
    ({"cnn": {"start": 3}}, "parameter 'start' of method 'cnn' must be one of colors, capped, ideal"),
    # Held out: accepted at start-up, then failed on every image.
    ({"cnn": {"start": "null"}}, "parameter 'start' of method 'cnn' must be one of colors, capped, ideal"),
    ({"cnn": {"input_size": 33}}, "config: cnn: cnn: input_size 33 is not divisible by 2**3"),
    ({"cnn": {"channels": [0, 0]}}, "cnn: channels must be one or more integers >= 1"),
    ({"cnn": {"lr": 0}}, "cnn: lr must be > 0"),
    ({"cnn_folder": {"device": "tpu"}, "methods": ["cnn_folder"]}, "parameter 'device' of method 'cnn_folder' must be one of auto, cpu, cuda"),
    ({"variants": {"v": {"method": "direct", "n_starts": 0}}, "methods": ["v"]}, "'n_starts' of method 'direct'"),
    # cnn's function takes **kwargs: its declared defaults are still the whole list.
    ({"cnn": {"learning_rate": 1.0}}, "unknown parameter 'learning_rate' of method 'cnn'"),
    ({"variants": {"v": {"method": "kmeans", "seeed": 1}}, "methods": ["v"]}, "unknown parameter 'seeed'"),
    ({"variants": {"v": {"method": "nope"}}, "methods": ["v"]}, "method 'nope' is not registered"),
    ({"variants": {"kmeans": {"method": "octree"}}}, "'kmeans' is also a method name"),
    ({"methods": ["kmeans", "nope"]}, "'nope' is neither a registered method"),
    ({"methods": []}, "config: methods: [] should be non-empty"),
    ({"kmean": {}}, "'kmean' is neither a setting nor a registered method"),
    ({"k": 0}, "config: k: 0 is less than the minimum of 1"),
    ({"k": 257}, "config: k: 257 is greater than the maximum of 256"),
    ({"colors": 300}, "config: colors: 300 is greater than the maximum of 256"),
    ({"k": True}, "config: k: True is not of type 'integer'"),
    ({"weights": {"mse": 2, "max_cost": float("inf"), "mean_cost": 42}}, "weights.max_cost: inf is greater than the maximum"),
    ({"weights": {"mse": 1e300, "max_cost": 21, "mean_cost": 42}}, "weights.mse: 1e+300 is greater than the maximum"),
    ({"weights": {"mse": float("nan"), "max_cost": 21, "mean_cost": 42}}, "mse must be a finite number"),
    ({"weights": {"mse": 2, "max_cost": 21, "mean_cost": -1}}, "config: weights.mean_cost: -1 is less than"),
    ({"methods": ["kmeans", "best"], "variants": {"best": {"method": "octree"}}}, "'best' names a folder"),
    ({"methods": ["logs"], "variants": {"logs": {"method": "octree"}}}, "'logs' names a folder"),
    ({"results_dir": "data/samples/out"}, "results_dir 'data/samples/out' overlaps input_dir"),
    ({"results_dir": "."}, "overlaps input_dir"),
])
def test_resolve_refuses_bad_settings_in_one_line_naming_them(over, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as e:
        resolve(workflow_config(**over), SCHEMA)
    assert "\n" not in str(e.value)


def test_a_method_that_cannot_run_here_is_kept_and_reported(monkeypatch):
    import cq.methods as registry

    monkeypatch.setitem(registry._REGISTRY, "libimagequant",
                        registry.Method("libimagequant", lambda p: None, "1", {}, ("no_such_module_here",)))
    table = resolve(workflow_config(methods=["libimagequant", "octree"]), SCHEMA).methods
    assert list(table) == ["libimagequant", "octree"]
    assert unavailable(table) == ["method 'libimagequant' needs the Python package 'no_such_module_here', "
                                  "which is not installed"]


def _flow(value) -> str:
    """``value`` as a user types it after ``--config key=``: YAML flow style, one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


@settings(max_examples=30, deadline=None)
@given(weights=st.fixed_dictionaries({key: st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False))
                                      for key in ("mse", "max_cost", "mean_cost")}),
       colors=st.one_of(st.none(), st.integers(1, 256)),
       read=st.fixed_dictionaries({"background": st.one_of(st.none(), st.lists(st.integers(0, 255), min_size=3, max_size=3)),
                                   "max_pixels": st.one_of(st.none(), st.integers(1, 10**9))}),
       direct=st.fixed_dictionaries({}, optional={"n_starts": st.integers(1, 64), "lattice_cap": st.floats(0, 8),
                                                  "time_budget": st.one_of(st.none(), st.floats(0, 60)),
                                                  "runtime": st.integers(1, 600)}),
       logs_dir=st.one_of(st.none(), st.sampled_from(["logs", "my logs"])))
def test_settings_typed_after_config_mean_what_a_config_file_means(weights, colors, read, direct, logs_dir):
    """Snakemake's ``--config`` reads nested values and ``null`` as text (held out:
    ``weights={mse: 2, ...}`` was refused, "'2' is not of type 'number'"); resolved, they give
    the settings the same values give in a config file."""
    from snakemake.cli import parse_config

    values = {"weights": weights, "colors": colors, "read": read, "direct": direct, "logs_dir": logs_dir,
              "methods": ["direct", "octree"]}
    typed_in = parse_config([f"{key}={_flow(value)}" for key, value in values.items()])
    assert resolve(workflow_config(**typed_in), SCHEMA) == resolve(workflow_config(**values), SCHEMA)


@pytest.mark.parametrize("typed_in, meant", [
    # Held out: refused, or kept as text so that the job's fingerprint differed.
    ("cnn={channels: [4, 8], lr: 1e-3}", {"cnn": {"channels": [4, 8], "lr": 0.001}}),
    ("weights={mse: 1e3, max_cost: 0, mean_cost: 0}", {"weights": {"mse": 1000.0, "max_cost": 0, "mean_cost": 0}}),
    ("results_dir=123", {"results_dir": "123"}),
    ("logs_dir=null", {"logs_dir": None}),
])
def test_config_text_that_yaml_or_snakemake_reads_otherwise(typed_in, meant):
    from snakemake.cli import parse_config

    assert resolve(workflow_config(**parse_config([typed_in])), SCHEMA) == resolve(workflow_config(**meant), SCHEMA)
