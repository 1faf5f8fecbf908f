"""The run history around the workflow: the prune guard, and the line of a failed run."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import snakemake, tiny_photo
from cq import history
from cq.discover import result_path


def test_prune_deleted_never_prunes_when_no_image_is_found(tmp_path, caplog):
    """An empty or unmounted input folder looks like every image deleted: nothing goes."""
    images, results = tmp_path / "images", str(tmp_path / "results")
    images.mkdir()
    (images / "a.png").write_bytes(b"a")
    record = tmp_path / result_path("results", "octree", "a.png", ".json")
    record.parent.mkdir(parents=True)
    record.write_text("{}")
    history.begin(results, str(images), ["a.png"], ["octree"])
    history.finish(results, ["a.png"], ["octree"])
    (images / "a.png").unlink()
    run = history.begin(results, str(images), [], ["octree"], prune_deleted=True)
    assert run["counts"]["deleted"] == 1 and run["pruned"] == 0
    assert record.exists()
    assert "nothing is pruned" in caplog.text
    history.finish(results, [], ["octree"])
    # With an image still there, the deleted one's results go.
    (images / "b.png").write_bytes(b"b")
    assert history.begin(results, str(images), ["b.png"], ["octree"], prune_deleted=True)["pruned"] == 0
    history.finish(results, ["b.png"], ["octree"])
    (images / "b.png").unlink()
    (images / "c.png").write_bytes(b"c")
    record_b = tmp_path / result_path("results", "octree", "b.png", ".json")
    record_b.write_text("{}")
    assert history.begin(results, str(images), ["c.png"], ["octree"], prune_deleted=True)["pruned"] == 1
    assert not record_b.exists()


@pytest.mark.slow
def test_a_run_whose_job_fails_ends_its_history_line_with_error(tmp_path):
    """Snakemake's onerror hook: a job that fails (its record cannot be written) gives the
    run's history line the status "error", not "ok"."""
    (tmp_path / "images").mkdir()
    Image.fromarray(np.ascontiguousarray(tiny_photo("coffee", (100, 100)))).save(tmp_path / "images/a.png")
    config = {"input_dir": "images", "results_dir": "results", "methods": ["octree"], "shard_size": 1}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(config))
    # A folder where the record goes: the shard job writes every record it can, then fails.
    (tmp_path / "results/octree/a.png.json").mkdir(parents=True)
    done = snakemake(tmp_path, check=False)
    assert done.returncode != 0
    assert "could not be written" in (tmp_path / "results/logs/shards/octree/0000.log").read_text() + done.stderr
    lines = (tmp_path / "results/history.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["error"]
