"""The workflow as a thin shell over cq: no Snakemake internals, any file name processed, the
record (never an mtime) deciding what reruns, settings refused in one line with exit 2."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import REPO, cq_nightly_command, env, snakemake, tiny_photo
from cq.config import load_schema, resolve
from cq.discover import result_key, result_path
from cq.run import Run

pytestmark = pytest.mark.slow
CONFIG = {"input_dir": "images", "results_dir": "results", "methods": ["kmeans"]}
# One path component: no "/", no NUL, no line break, not hidden; braces, angle brackets,
# "%", a leading dash and multibyte letters are all welcome.
COMPONENT = st.text(st.characters(blacklist_characters="/\0\n\r", blacklist_categories=("Cs",)),
                    min_size=1, max_size=40).filter(lambda s: not s.startswith(".") and s.strip() == s)


def save(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100 + seed, 100), size=(12, 10)))).save(path, "PNG")


def workspace(tmp_path: Path, names) -> Path:
    for i, name in enumerate(names):
        save(tmp_path / "images" / name, i)
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(CONFIG))
    return tmp_path


def test_no_snakemake_private_name_is_used():
    sources = [REPO / "Snakefile", *REPO.glob("rules/*.smk"), *REPO.glob("cq/**/*.py"), *REPO.glob("scripts/*.py")]
    private = re.compile(r"workflow\._|_prepare_dag|PATHVAR|snakemake\.pathvars")
    assert [str(p) for p in sources if private.search(p.read_text())] == []


@given(st.lists(COMPONENT, min_size=1, max_size=3), st.lists(COMPONENT, min_size=1, max_size=3))
@example(["holiday {1}.png"], ["holiday %7B1%7D.png"])
@example(["<logs>.png"], ["%3Clogs%3E.png"])
def test_result_keys_never_hold_braces_or_angle_brackets_and_never_meet(a, b):
    key_a, key_b = result_key("/".join(a)), result_key("/".join(b))
    assert not set("{}<>") & set(key_a)
    assert (key_a == key_b) == (a == b)


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(COMPONENT.map(lambda s: s + ".png"), min_size=1, max_size=4, unique=True))
@example(["holiday {1}.png", "IMG_{2024}.png", "{a}/b.png", "<logs>.png", "-dash {x,y}.png", "100%.png"])
def test_every_image_gets_its_record_whatever_its_name(tmp_path_factory, names):
    workdir = workspace(tmp_path_factory.mktemp("names"), names)
    os.symlink(workdir / "images" / names[0], workdir / "images" / "link.png")  # a link to such a name
    snakemake(workdir)
    for name in [*names, "link.png"]:
        record = json.loads(Path(workdir / result_path("results", "kmeans", name, ".json")).read_text())
        assert record["status"] == "ok" and record["image"]["path"] == f"images/{name}"
    assert "Nothing to be done" in snakemake(workdir).stderr


def test_new_content_dated_in_the_future_is_computed_once_and_kept(tmp_path):
    workdir = workspace(tmp_path, ["a.png", "b.png"])
    snakemake(workdir)
    save(workdir / "images/a.png", seed=7)
    os.utime(workdir / "images/a.png", (1925078400, 1925078400))  # 2031-01-01
    done = snakemake(workdir)
    assert "key=a.png" in done.stderr and "key=b.png" not in done.stderr
    again = snakemake(workdir)  # exit 0, and the fresh record stays
    assert "Nothing to be done" in again.stderr
    assert json.loads((workdir / "results/kmeans/a.png.json").read_text())["status"] == "ok"


def test_a_plain_run_in_which_every_result_failed_exits_1(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images/empty.png").write_bytes(b"")
    (tmp_path / "images/text.png").write_text("not an image")
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(CONFIG))
    done = snakemake(tmp_path, check=False)
    assert done.returncode == 1 and "cq: every result of this run failed" in done.stderr
    assert (tmp_path / "results/report.html").is_file()


@pytest.mark.parametrize("override, named", [
    ("k=0", "config: colors: 0 is less than the minimum of 1"),
    ("k=300", "config: colors: 300 is greater than the maximum of 256"),
    ("colors=300", "config: colors: 300 is greater than the maximum of 256"),
    ("methods=[]", "config: methods: [] should be non-empty"),
    ("methods=[nope]", "'nope' is neither a registered method"),
    ("bogus_key=1", "'bogus_key' is neither a setting nor a registered method"),
    ("input_dir=missing", "config: input_dir 'missing' is not a folder"),
])
def test_cq_nightly_refuses_bad_settings_in_one_line_with_exit_2_leaving_nothing(tmp_path, override, named):
    workdir = workspace(tmp_path, ["a.png"])
    done = subprocess.run([*cq_nightly_command(workdir), "--config", override], capture_output=True, text=True,
                          env=env(), timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("cq: error: ") and named in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (workdir / "results").exists()


def test_cq_nightly_passes_k_on_as_colors(tmp_path):
    workdir = workspace(tmp_path, ["a.png"])
    done = subprocess.run([*cq_nightly_command(workdir), "--config", "k=12"], capture_output=True, text=True,
                          env=env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((workdir / "results/kmeans/a.png.json").read_text())["k"] == 12


def test_cq_nightly_needs_to_be_told_where_the_workflow_is(tmp_path):
    cmd = [sys.executable, "-m", "cq.nightly", "-d", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env(CQ_WORKFLOW=""), timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and "give --workflow DIR or set CQ_WORKFLOW" in done.stderr


def test_a_shard_runs_log_is_its_shards_for_the_hooks_and_cq_nightly_alike(tmp_path):
    workdir = workspace(tmp_path, ["a.png", "b.png", "c.png"])
    config = {**yaml.safe_load((REPO / "config/config.yaml").read_text()), **CONFIG, "shard_size": 2,
              "input_dir": str(workdir / "images"), "results_dir": str(workdir / "results")}
    run = Run.plan(resolve(config, load_schema(REPO / "config/schema.yaml")))
    shard = next(name for name, images in run.shards.items() if "a.png" in images)
    assert run.log_of("kmeans", "a.png") == f"{workdir}/results/logs/shards/kmeans/{shard}.log"
