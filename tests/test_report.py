"""The report: CSV rows and columns, an escaped and complete HTML page, small cached thumbnails.

Records come from real quantizations of small crops of scikit-image photographs, plus a real
error record (an empty file), an error stub as the workflow builds it for unreadable JSON, a
CNN-like record with a training curve, and an image whose name is markup, quotes and unicode.
"""

from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from skimage import data

from cq.pipeline import Job, quantize_file
from cq.report import (CSV_COLUMNS, THUMB_PX, build_report, image_key, ordered_methods, records_table,
                       summary_table)

METHODS = ("kmeans", "median_cut", "octree")
EVIL = "<script>alert(1)</script> \"quoted\" 'single' café ✓.png"
CROPS = {
    "astronaut.png": lambda: data.astronaut()[40:136, 150:278],
    "coffee.jpg": lambda: data.coffee()[100:196, 200:328],
    f"sub dir/{EVIL}": lambda: data.chelsea()[60:156, 100:228],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Input folder, results of every method, and one built report (paths and records)."""
    root = tmp_path_factory.mktemp("report")
    inputs, results = root / "in", root / "results"
    for name, crop in CROPS.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(crop())).save(inputs / name)
    (inputs / "empty.png").write_bytes(b"")
    records = []
    for name in [*CROPS, "empty.png"]:
        for method in METHODS:
            out = results / method / name
            out.parent.mkdir(parents=True, exist_ok=True)
            records.append(quantize_file(inputs / name, f"{out}.png", f"{out}.json", Job(method=method)))
    cnn = copy.deepcopy(records[0])
    cnn.update(method="cnn_lr1e-3", base_method="cnn",
               extras={"curve": [9000.0 - 50 * i + (i % 3) * 7 for i in range(40)], "device": "cuda"})
    cnn["scores"]["score"] *= 0.5  # the best on its image, so the marker moves off kmeans
    (results / "cnn_lr1e-3").mkdir()
    shutil.copy(results / "kmeans" / "astronaut.png.png", results / "cnn_lr1e-3" / "astronaut.png.png")
    records.append(cnn)
    stub = {"status": "error", "error": "results/octree/x.json: cannot read record <b>bad</b>",
            "method": "octree", "image": {"path": f"{inputs}/broken <img src=x>.png"}}
    records.append(stub)
    out = root / "out"
    build_report(records, results, inputs, out / "report.csv", out / "report.html",
                 history=[{"start": "2025-01-01T10:00:00", "end": "2025-01-01T10:04:00",
                           "counts": {"ok": 9, "error": 3}, "time_per_method": {"kmeans": 3.0, "octree": 0.4}}])
    return {"root": root, "inputs": inputs, "results": results, "out": out, "records": records,
            "html": (out / "report.html").read_text(encoding="utf-8")}


def test_csv_has_one_row_per_image_and_method(run):
    rows = list(csv.DictReader(open(run["out"] / "report.csv", encoding="utf-8")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(CROPS) * len(METHODS) + 3 + 1 + 1  # + empty.png x3, cnn, stub
    assert len({(r["image"], r["method"]) for r in rows}) == len(rows)
    evil = [r for r in rows if r["image"] == f"sub dir/{EVIL}"]
    assert {r["method"] for r in evil} == set(METHODS)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 4 and all(r["error"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["score"]) > 0 and float(r["wall_time_s"]) >= 0 and r["n_colors"] == "37" for r in ok)
    assert {r["image"] for r in rows if r["best"] == "True"} == {r["image"] for r in ok}


def test_html_escapes_names_and_has_no_script(run):
    page = run["html"]
    assert "<script" not in page.lower() and "<img src=x>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &quot;quoted&quot; &#x27;single&#x27; café ✓.png" in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page


def test_html_is_well_nested(run):
    class Nesting(HTMLParser):
        void = {"img", "meta", "br", "line", "circle", "rect", "polyline", "link"}

        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in self.void:
                self.stack.append(tag)

        def handle_endtag(self, tag):
            if tag not in self.void:
                assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    parser = Nesting()
    parser.feed(run["html"])
    assert parser.stack == []


def test_html_has_summary_best_marker_failures_curve_and_history(run):
    page = run["html"]
    for text in ("Summary per method", "Ratio to kmeans (geo-mean)", "Wins", "Failures", "Run history",
                 'class="spark"', 'class="tile best"', 'id="failures"'):
        assert text in page, text
    assert page.count('<svg class="chart"') == 4  # gap, ratio, time, history
    table = records_table(run["records"], run["inputs"])
    assert page.count('class="tile best"') == int(table["best"].sum())
    assert page.count('class="tile fail"') == 4


def test_thumbnails_exist_are_small_and_relative(run):
    page, out = run["html"], run["out"]
    sources = [s for s in _attr_values(page, "src")]
    assert sources and all(not s.startswith(("/", "file:", "http")) for s in sources)
    assert page.count('loading="lazy"') == len(sources)
    thumbs = [out / s for s in sources if "/pal/" not in s]
    assert len(thumbs) == len(CROPS) * (1 + len(METHODS)) + 1  # originals, outputs, the cnn copy
    for path in thumbs:
        with Image.open(path) as im:
            assert max(im.size) <= THUMB_PX
        assert path.stat().st_size < 40_000
    quantized = [p for p in thumbs if p.suffix == ".png"]
    assert all(len(Image.open(p).convert("RGB").getcolors(1000)) <= 37 for p in quantized)


def _attr_values(page: str, name: str) -> list[str]:
    return [unquote(v) for v in _attr_values_of(page, "img", name)]


def test_thumbnails_are_cached_and_rebuilt_when_stale(run, tmp_path):
    out = tmp_path / "out"
    args = (run["records"], run["results"], run["inputs"], out / "r.csv", out / "r.html")
    build_report(*args)
    thumbs = sorted((out / "report_files").rglob("*.*"))
    mtimes = {p: p.stat().st_mtime_ns for p in thumbs}
    build_report(*args)
    assert {p: p.stat().st_mtime_ns for p in thumbs} == mtimes
    source = run["results"] / "octree" / "coffee.jpg.png"
    os.utime(source, ns=(source.stat().st_atime_ns, max(mtimes.values()) + 10**9))
    build_report(*args)
    changed = [p for p in thumbs if p.stat().st_mtime_ns != mtimes[p]]
    assert len(changed) == 1 and changed[0].suffix == ".png"
    assert not [p for p in out.rglob("*.tmp")]


def test_records_table_tolerates_bare_error_stubs():
    table = records_table([{"status": "error"}, {"status": "error", "method": "x", "image": {}}])
    assert list(table["status"]) == ["error", "error"] and table["error"].notna().all()
    assert not table["best"].any()


def test_summary_numbers():
    def rec(image, method, score, gap, t, status="ok"):
        return {"status": status, "error": None if status == "ok" else "boom", "method": method,
                "image": {"path": f"/in/{image}"}, "wall_time_s": t,
                "scores": {"score": score if status == "ok" else None, "gap": gap}}

    records = [rec("a", "kmeans", 100, 0.5, 1), rec("a", "direct", 50, 0.0, 3),
               rec("b", "kmeans", 200, 1.0, 2), rec("b", "direct", 200, 1.0, 5),
               rec("c", "kmeans", 300, 0.2, 1), rec("c", "direct", None, None, 1, status="error")]
    table = records_table(records, Path("/in"))
    summary = summary_table(table, ordered_methods(table["method"].unique()))
    assert list(summary.index) == ["kmeans", "direct"]
    assert summary.at["direct", "ratio_to_kmeans_geomean"] == pytest.approx(np.sqrt(0.5 * 1.0))
    assert summary.at["direct", "gap_geomean"] == pytest.approx(np.sqrt(1.0 * 2.0) - 1)
    assert summary.at["direct", "gap_mean"] == pytest.approx(0.5)
    assert (summary.at["kmeans", "wins"], summary.at["direct", "wins"]) == (2, 2)  # tie on b counts for both
    assert summary.at["direct", "failures"] == 1 and summary.at["direct", "mean_time_s"] == 4.0
    assert summary.at["kmeans", "mean_score"] == 200


def test_image_key_and_method_order(tmp_path):
    assert image_key(str(tmp_path / "a" / "b.png"), tmp_path) == "a/b.png"
    assert image_key("elsewhere/b.png", tmp_path) == "elsewhere/b.png"
    assert image_key(None, tmp_path) == "(unknown image)"
    assert ordered_methods(["octree", "cnn", "kmeans"]) == ["kmeans", "cnn", "octree"]
    assert ordered_methods(["octree", "cnn", "kmeans"], ["octree", "kmeans"]) == ["octree", "kmeans", "cnn"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (apt-get install chromium)")
def test_chromium_renders_the_page(run, tmp_path):
    """The DOM chromium builds holds every card, and the screenshot shows the photographs.

    A page whose thumbnails fail to load screenshots with a few thousand colours (text, flat
    boxes); with the photographs it has tens of thousands.
    """
    page, shot = (run["out"] / "report.html").as_uri(), tmp_path / "shot.png"
    dom = _chromium_run(["--dump-dom", page]).stdout
    assert "Summary per method" in dom and "<script" not in dom.lower()
    assert dom.count('class="card"') == len(CROPS) + 2  # + empty.png and the stub's image
    _chromium_run(["--window-size=1280,3000", "--hide-scrollbars", f"--screenshot={shot}", page])
    with Image.open(shot) as im:
        assert len(im.convert("RGB").getcolors(1 << 24)) > 8000


def _chromium_run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.parametrize("records", [
    [],
    [{"status": "error"}, {"status": "error", "image": "not a dict", "scores": 3, "method": None}],
], ids=["no records", "only malformed errors"])
def test_degenerate_inputs_still_give_a_page(records, tmp_path):
    build_report(records, tmp_path / "results", tmp_path / "in", tmp_path / "r.csv", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Summary per method" in page and page.rstrip().endswith("</html>")
    assert len(list(csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8")))) == len(records)


def test_unreadable_sources_give_no_thumbnail_and_no_dead_link(run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    (results / "octree" / "coffee.jpg.png").write_bytes(b"not a png")
    build_report(run["records"], results, run["inputs"], tmp_path / "r.csv", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    links = [unquote(v) for v in _attr_values_of(page, "a", "href") if not v.startswith("#")]
    assert links and all((tmp_path / link).exists() for link in links)
    assert not any(link.endswith("octree/coffee.jpg.png") or "empty.png" in link for link in links)
    assert page.count("no preview") == 3  # the broken PNG, empty.png and the stub's missing image


def _attr_values_of(page: str, tag: str, name: str) -> list[str]:
    found = []

    class Collect(HTMLParser):
        def handle_starttag(self, t, attrs):
            found.extend(v for k, v in attrs if k == name and t == tag)

    Collect().feed(page)
    return found


def test_max_cards_bounds_the_page_not_the_csv(run, tmp_path):
    build_report(run["records"], run["results"], run["inputs"], tmp_path / "r.csv", tmp_path / "r.html",
                 max_cards=1)
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    full = run["html"]
    n_images = len({row["image"] for row in csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8"))})
    assert f"The page shows the first 1 of {n_images} images" in page
    assert page.count("<section class=\"card\"") == 1 < full.count("<section class=\"card\"")
    assert len(list(csv.DictReader(open(tmp_path / "r.csv", encoding="utf-8")))) == len(run["records"])
    assert "Summary per method" in page and "Failures" in page
