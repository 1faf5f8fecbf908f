"""The report: CSV rows and columns, an escaped and complete HTML page, small cached thumbnails,
gaps and ties that hold up on odd images, and a page that fits a phone and a desktop in Chromium.

Records come from real quantizations of a hostile folder: crops of scikit-image photographs,
a transparent image, a six-colour and a grey image, three broken files, names made of markup,
quotes and unicode; plus a CNN-like record with a training curve and an error stub as the
workflow builds it for unreadable JSON.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from datetime import datetime, timezone
from html import unescape
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from skimage import data

import cq.report.page
from cq.discover import result_path
from cq.pipeline import Job, quantize_file
from cq.report import CSV_COLUMNS, THUMB_PX, build_report, image_key, ordered_methods, records_table, summary_table
from cq.report.tables import training

METHODS = ("kmeans", "median_cut", "octree")
EVIL = "<script>alert(1)</script> \"quoted\" 'single' café ✓.png"
BUILT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
HISTORY = [{"start": "2025-01-01T10:00:00", "end": "2025-01-01T10:04:00", "status": "ok",
            "counts": {"new": 9, "failed": 3}, "time_per_method": {"kmeans": 3.0, "octree": 0.4},
            "skipped": ["an earlier run's skip"]}]
SKIPPED = ["loop/: a symlink loop <b>x</b>"]


def _transparent() -> np.ndarray:
    """An RGBA crop whose alpha fades from opaque (centre) to fully transparent (corners)."""
    rgb = data.astronaut()[40:136, 150:278]
    yy, xx = np.mgrid[-1:1:96j, -1:1:128j]
    alpha = np.clip(255 * (1.4 - np.hypot(yy, xx)), 0, 255).astype(np.uint8)
    return np.dstack([rgb, alpha])


def _six_colours() -> np.ndarray:
    """Six pure colours (cube corners) in stripes: a degenerate image (fewer colours than k,
    a lower bound that ignores k near 0) that a good method nearly reaches."""
    corners = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]])
    return np.repeat(corners, 16, axis=0)[:, None, :].repeat(64, axis=1).astype(np.uint8)


IMAGES = {
    "astronaut.png": lambda: data.astronaut()[40:136, 150:278],
    "coffee.jpg": lambda: data.coffee()[100:196, 200:328],
    f"sub dir/{EVIL}": lambda: data.chelsea()[60:156, 100:228],
    "transparent.png": _transparent,
    "six colours.png": _six_colours,
    "grey & 50%.png": lambda: data.camera()[100:196, 100:228],
}
BROKEN = {"empty.png": b"", "truncated.png": None, "not an image.jpg": b"plain text, no image"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Input folder, results of every method, and one built report (paths and records)."""
    root = tmp_path_factory.mktemp("report")
    inputs, results = root / "in", root / "results"
    for name, make in IMAGES.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(make())).save(inputs / name)
    png = (inputs / "astronaut.png").read_bytes()
    BROKEN["truncated.png"] = png[: len(png) // 2]
    for name, content in BROKEN.items():
        (inputs / name).write_bytes(content)
    records = []
    for name in [*IMAGES, *BROKEN]:
        for method in METHODS:
            out = Path(result_path(str(results), method, name, ""))
            out.parent.mkdir(parents=True, exist_ok=True)
            records.append(quantize_file(inputs / name, f"{out}.png", f"{out}.json", Job(method=method)))
    cnn = copy.deepcopy(records[0])
    curve = [9000.0 - 50 * i + (i % 3) * 7 for i in range(41)]
    cnn.update(method="cnn_lr1e-3", base_method="cnn",
               extras={"init_score": curve[0], "curve": curve, "best_score": min(curve),
                       "best_epoch": int(np.argmin(curve)), "device": "cuda"})
    cnn["scores"]["score"] *= 0.5  # the best on its image, so the marker moves off kmeans
    (results / "cnn_lr1e-3").mkdir()
    shutil.copy(results / "kmeans" / "astronaut.png.png", results / "cnn_lr1e-3" / "astronaut.png.png")
    records.append(cnn)
    stub = {"status": "error", "error": "results/octree/x.json: cannot read record <b>bad</b>",
            "method": "octree", "image": {"path": f"{inputs}/broken <img src=x>.png"}}
    records.append(stub)
    out = root / "out"
    build_report(records, results, inputs, out / "report.csv", out / "report.html",
                 summary_path=out / "summary.tsv", history=HISTORY, skipped=SKIPPED, built=BUILT)
    return {"root": root, "inputs": inputs, "results": results, "out": out, "records": records,
            "html": (out / "report.html").read_text(encoding="utf-8")}


def _csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_has_one_row_per_image_and_method(run):
    rows = _csv(run["out"] / "report.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    n_images = len(IMAGES) + len(BROKEN)
    assert len(rows) == n_images * len(METHODS) + 1 + 1  # + cnn, stub
    assert len({(r["image"], r["method"]) for r in rows}) == len(rows)
    assert {r["method"] for r in rows if r["image"] == f"sub dir/{EVIL}"} == set(METHODS)
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == len(BROKEN) * len(METHODS) + 1 and all(r["error"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(float(r["score"]) > 0 and float(r["wall_time_s"]) >= 0 and r["n_colors"] == "37" for r in ok)
    assert {r["image"] for r in rows if r["best"] == "True"} == {r["image"] for r in ok}


def test_summary_tsv_has_one_row_per_method(run):
    with open(run["out"] / "summary.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, dialect="excel-tab"))
    assert [r["method"] for r in rows] == ["kmeans", "cnn_lr1e-3", "median_cut", "octree"]
    assert int(rows[0]["ok"]) == len(IMAGES) and int(rows[0]["failures"]) == len(BROKEN)


def test_html_escapes_names_and_runs_only_its_own_script(run):
    page = run["html"]
    own = resources.files("cq.report").joinpath("templates", "report.js").read_text(encoding="utf-8")
    assert page.lower().count("<script") == 1 and f"<script>{own}</script>" in page
    assert "<img src=x>" not in page and "<b>bad</b>" not in page and "<b>x</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quoted&#34; &#39;single&#39; café ✓.png" in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "a symlink loop &lt;b&gt;x&lt;/b&gt;" in page
    assert "an earlier run's skip" not in page  # this run's skips are passed in, not an old run's
    assert "http://" not in page and "https://" not in page  # offline: nothing fetched


def test_html_is_well_nested(run):
    class Nesting(HTMLParser):
        void = {"img", "meta", "br", "line", "circle", "rect", "polyline", "link", "input", "path"}

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


def test_html_has_every_section_and_one_result_row_each(run):
    page = run["html"]
    for text in ('id="summary"', "Ratio to kmeans (geo-mean)", "Wins", "Ties", 'id="failures"', "Run history",
                 'id="results-table"', 'class="training"', 'class="tile best"'):
        assert text in page, text
    assert page.count('<svg class="chart"') == 4 + 1 + 1  # gap, best, kmeans, time; history; training
    table = records_table(run["records"], run["inputs"])
    body = page[page.index('id="results-table"'):page.index('id="images"')]
    assert body.count("<tr>") == 1 + len(table)  # the header row and one row per result
    assert page.count('class="tile fail"') == int((table["status"] != "ok").sum())


def test_score_parts_sum_to_the_score_and_the_objective_is_explained(run):
    table = records_table(run["records"], run["inputs"])
    ok = table[(table["status"] == "ok") & (table["method"] != "cnn_lr1e-3")]
    total = ok["part_mse"] + ok["part_max_cost"] + ok["part_mean_cost"]
    assert np.allclose(total, ok["score"], rtol=1e-9)
    page = run["html"]
    assert "score = 2·MSE + 21·max cost + 42·mean cost" in page and "nearest corner of the RGB cube" in page
    assert page.count('<svg class="parts"') == int(((table["status"] == "ok") & (table["score"] > 0)).sum())
    row = ok.iloc[0]
    assert f"MSE {row['part_mse']:,.1f}, max cost {row['part_max_cost']:,.1f}" in page


def test_cnn_training_curve_has_axes_values_and_gain(run):
    page = run["html"]
    part = page[page.index('class="training"'):]
    part = part[:part.index("</section>")]
    assert part.count('class="tick"') >= 3 and part.count('class="name"') >= 3  # x and y tick labels
    assert "before training 9,000.0" in part and "best 7,007.0 at epoch 40 of 40" in part
    assert f"gain {100 * (9000 - 7007) / 9000:.1f}%" in part


def test_training_reads_the_record_and_falls_back_on_the_curve():
    t = training({"extras": {"curve": [10.0, 8.0, 9.0, 7.5, 8.0]}})
    assert (t["init"], t["best"], t["best_epoch"]) == (10.0, 7.5, 3) and t["gain"] == pytest.approx(0.25)
    t = training({"extras": {"curve": [{"score": 4.0}, {"score": 2.0}], "init_score": 5.0, "best_epoch": 1}})
    assert (t["init"], t["best"], t["best_epoch"]) == (5.0, 2.0, 1)
    assert training({"extras": {"curve": [1.0]}}) is None and training({}) is None


def test_transparent_original_keeps_alpha_on_a_checkerboard(run):
    page, out = run["html"], run["out"]
    card = page[page.index("<h3>transparent.png</h3>"):]
    src = unquote(re.search(r'<img src="([^"]+)" alt="original"', card).group(1))
    with Image.open(out / src) as im:
        assert im.format == "PNG" and im.mode == "RGBA" and np.asarray(im)[..., 3].min() == 0
    css = resources.files("cq.report").joinpath("templates", "report.css").read_text(encoding="utf-8")
    frame = re.search(r"\.tile \.frame\{([^}]*)\}", css).group(1)
    assert "linear-gradient(45deg" in frame and "background-size:16px 16px" in frame


def test_thumbnails_exist_are_small_and_relative(run):
    page, out = run["html"], run["out"]
    sources = [unquote(s) for s in _attr_values_of(page, "img", "src")]
    assert sources and all(not s.startswith(("/", "file:", "http")) for s in sources)
    assert page.count('loading="lazy"') == len(sources)
    thumbs = [out / s for s in sources if "/pal/" not in s]
    assert len(thumbs) == len(IMAGES) * (1 + len(METHODS)) + 1  # originals, outputs, the cnn copy
    for path in thumbs:
        with Image.open(path) as im:
            assert max(im.size) <= THUMB_PX
        assert path.stat().st_size < 40_000
    quantized = [p for p in thumbs if "/q/" in p.as_posix()]
    assert all(len(Image.open(p).convert("RGB").getcolors(1000)) <= 37 for p in quantized)


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


def test_report_is_a_function_of_its_arguments(run, tmp_path):
    """Same arguments, same bytes; a history file beside the results is not read unless passed."""
    (run["results"] / "history.jsonl").write_text(json.dumps({"start": "1999-09-09T09:09:09"}) + "\n")
    try:
        pages = []
        for name in ("a", "b"):
            build_report(run["records"], run["results"], run["inputs"], tmp_path / f"{name}.csv",
                         tmp_path / f"{name}.html", history=HISTORY, built=BUILT)
            pages.append((tmp_path / f"{name}.html").read_bytes())
    finally:
        (run["results"] / "history.jsonl").unlink()
    assert pages[0] == pages[1] and b"1999-09-09" not in pages[0]


def test_history_shows_the_runs_passed_in_and_nothing_running(run):
    page = run["html"]
    history = page[page.index('<h2 id="history">'):page.index("<footer>")]
    assert "2025-01-01T10:00:00" in history and "4.0 min" in history and "new 9, failed 3" in history
    assert history.count("<tr><td>") == len(HISTORY) and "running" not in history
    assert "2026-01-02 03:04:05 UTC" in history  # says when it was built, so it is never stale


def test_a_failed_build_leaves_the_previous_page(run, tmp_path, monkeypatch):
    args = (run["records"], run["results"], run["inputs"], tmp_path / "r.csv", tmp_path / "r.html")
    build_report(*args, built=BUILT)
    before = (tmp_path / "r.html").read_bytes()

    def broken(*_, **__):
        raise RuntimeError("template failed")

    monkeypatch.setattr(cq.report, "render_page", broken)
    with pytest.raises(RuntimeError):
        build_report(*args)
    assert (tmp_path / "r.html").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def _rec(image, method, score, bound=100.0, status="ok", t=1.0):
    return {"status": status, "error": None if status == "ok" else "boom", "method": method,
            "image": {"path": f"/in/{image}"}, "wall_time_s": t,
            "scores": {"score": score if status == "ok" else None, "lower_bound": bound,
                       "mse": 1.0, "max_cost": 1.0, "mean_cost": 1.0}}


def test_ties_are_ties_not_wins():
    methods = ["kmeans", "a", "b", "c", "d", "e"]
    records = [_rec("six", m, 500.0 * (1 + 1e-12 * i)) for i, m in enumerate(methods)]  # equal within 1e-9
    records += [_rec("two", "kmeans", 300.0), _rec("two", "a", 300.0), _rec("two", "b", 300.0 * (1 + 1e-6))]
    records += [_rec("one", "b", 200.0), _rec("one", "a", 250.0)]
    table = records_table(records, Path("/in"))
    summary = summary_table(table)
    assert table[table["image"] == "six"]["tie"].all()
    assert summary.at["b", "wins"] == 1 and summary.at["b", "ties"] == 1
    assert summary.at["kmeans", "wins"] == 0 and summary.at["kmeans", "ties"] == 2
    assert summary["wins"].sum() == 1


def test_gaps_hold_up_on_degenerate_images():
    records = [_rec("photo", "kmeans", 110.0, bound=100.0), _rec("photo", "x", 150.0, bound=100.0),
               # a near-zero bound that every method is far above: the bound is loose here
               _rec("degenerate", "kmeans", 50.0, bound=0.02), _rec("degenerate", "x", 50.0, bound=0.02),
               # score and bound both 0 (an image of cube corners): at the bound, no 0/0
               _rec("corners", "kmeans", 0.0, bound=0.0), _rec("corners", "x", 1e-7, bound=0.0)]
    table = records_table(records, Path("/in")).set_index(["image", "method"])
    assert table.at[("photo", "x"), "gap"] == pytest.approx(0.5)
    assert table.loc["degenerate", "bound_loose"].all() and not table.loc["photo", "bound_loose"].any()
    assert table.at[("corners", "kmeans"), "gap"] == 0 and table.at[("corners", "x"), "gap"] < 1e-6
    summary = summary_table(table.reset_index())
    assert summary.at["kmeans", "gap_median"] == pytest.approx(0.05)  # (0.1 + 0) / 2: no 246,981%
    assert summary.at["kmeans", "loose_images"] == 1
    assert summary.at["x", "vs_best_geomean"] == pytest.approx((150 / 110) ** (1 / 3))


def test_the_page_shows_no_absurd_gap_on_an_image_quantized_well(run):
    table = records_table(run["records"], run["inputs"])
    well = table[(table["status"] == "ok") & (table["image"] == "six colours.png")]
    assert len(well) == len(METHODS) and well["gap"].max() < 0.05
    assert (well["score"] / well["lower_bound_any_k"]).min() > 10  # the bound that ignores k: absurd
    page = run["html"]
    card = page[page.index("<h3>six colours.png</h3>"):]
    gaps = re.findall(r"<span>gap ([^<]*)</span>", card[:card.index("</section>")])
    assert len(gaps) == len(METHODS) and all(g.endswith("%") and float(g[:-1].replace(",", "")) <= 100 for g in gaps)


def test_records_table_tolerates_bare_error_stubs():
    table = records_table([{"status": "error"}, {"status": "error", "method": "x", "image": {}}])
    assert list(table["status"]) == ["error", "error"] and table["error"].notna().all()
    assert not table["best"].any()


def test_summary_numbers():
    records = [_rec("a", "kmeans", 150, t=1), _rec("a", "direct", 100, t=3),
               _rec("b", "kmeans", 200, t=2), _rec("b", "direct", 200, t=5),
               _rec("c", "kmeans", 300, t=1), _rec("c", "direct", None, status="error", t=1)]
    table = records_table(records, Path("/in"))
    summary = summary_table(table, ordered_methods(table["method"].unique()))
    assert list(summary.index) == ["kmeans", "direct"]
    assert summary.at["direct", "ratio_to_kmeans_geomean"] == pytest.approx(np.sqrt(100 / 150 * 1.0))
    assert summary.at["direct", "gap_median"] == pytest.approx(0.5)  # gaps 0.0 and 1.0
    assert summary.at["direct", "gap_geomean"] == pytest.approx(np.sqrt(1.0 * 2.0) - 1)
    assert (summary.at["kmeans", "wins"], summary.at["direct", "wins"]) == (1, 1)
    assert (summary.at["kmeans", "ties"], summary.at["direct", "ties"]) == (1, 1)
    assert summary.at["direct", "failures"] == 1 and summary.at["direct", "median_time_s"] == 4.0


def test_image_key_and_method_order(tmp_path):
    assert image_key(str(tmp_path / "a" / "b.png"), tmp_path) == "a/b.png"
    assert image_key("elsewhere/b.png", tmp_path) == "elsewhere/b.png"
    assert image_key(None, tmp_path) == "(unknown image)"
    assert ordered_methods(["octree", "cnn", "kmeans"]) == ["kmeans", "cnn", "octree"]
    assert ordered_methods(["octree", "cnn", "kmeans"], ["octree", "kmeans"]) == ["octree", "kmeans", "cnn"]


@pytest.mark.parametrize("records", [
    [],
    [{"status": "error"}, {"status": "error", "image": "not a dict", "scores": 3, "method": None}],
], ids=["no records", "only malformed errors"])
def test_degenerate_inputs_still_give_a_page(records, tmp_path):
    build_report(records, tmp_path / "results", tmp_path / "in", tmp_path / "r.csv", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="summary"' in page and page.rstrip().endswith("</html>")
    assert len(_csv(tmp_path / "r.csv")) == len(records)


def test_unreadable_sources_give_no_thumbnail_and_no_dead_link(run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(run["results"], results)
    (results / "octree" / "coffee.jpg.png").write_bytes(b"not a png")
    build_report(run["records"], results, run["inputs"], tmp_path / "r.csv", tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    links = [unquote(v) for v in _attr_values_of(page, "a", "href") if not v.startswith("#")]
    assert links and all((tmp_path / link).exists() for link in links)
    assert not any(link.endswith("octree/coffee.jpg.png") or "empty.png" in link for link in links)
    assert page.count("no preview") == len(BROKEN) + 2  # the broken files, the broken PNG, the stub's image


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
    n_images = len({row["image"] for row in _csv(tmp_path / "r.csv")})
    assert f"The page shows the first 1 of {n_images} images" in page
    assert page.count('<section class="card"') == 1 < run["html"].count('<section class="card"')
    assert len(_csv(tmp_path / "r.csv")) == len(run["records"])
    assert 'id="summary"' in page and 'id="failures"' in page


# --- headless Chromium: the page as a browser lays it out --------------------------------------

# Injected into a copy of the page, first in <head>: it records every error (script errors,
# console.error, images and other resources that fail to load), then, after load, the page's
# widths, and whether the results table sorts and filters, and posts them to the host page,
# which writes them into its DOM for `chromium --dump-dom`. No DevTools protocol needed. The
# host shows the copy in an iframe of the tested width: headless Chromium's window is at
# least 500 px wide, an iframe can be a phone's 390.
MEASURE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window ? "failed to load " + (t.src || t.href || t.tagName) : String(e.message));
}, true);
(function () { var f = console.error; console.error = function () {
  window.__errors.push(Array.prototype.join.call(arguments, " ")); f.apply(console, arguments); }; })();
window.addEventListener("load", function () { setTimeout(function () {
  var out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth};
  var table = document.getElementById("results-table"), th = table.tHead.rows[0].cells[3];
  function scores() { return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.hidden ? null : r.cells[3].getAttribute("data-v"); }).filter(function (v) { return v; }).map(Number); }
  th.click(); var up = scores(); th.click(); var down = scores();
  out.sorted = up.length > 2 && up.every(function (v, i) { return i === 0 || up[i - 1] <= v; })
    && down.every(function (v, i) { return i === 0 || down[i - 1] >= v; });
  th.click();
  var filter = document.getElementById("filter"); filter.value = "octree";
  filter.dispatchEvent(new Event("input"));
  out.filtered = Array.prototype.filter.call(table.tBodies[0].rows, function (r) { return !r.hidden; })
    .map(function (r) { return r.cells[1].textContent; });
  filter.value = ""; filter.dispatchEvent(new Event("input"));
  out.cards = document.querySelectorAll("section.card").length;
  out.errors = window.__errors;
  parent.postMessage(JSON.stringify(out), "*");
}, 0); });
</script>"""
HOST = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe src="{src}" style="border:0;display:block;width:{width}px;height:{height}px"></iframe>
<script>addEventListener("message", function (e) {{ var pre = document.createElement("pre");
pre.id = "cq-measure"; pre.textContent = e.data; document.body.appendChild(pre); }});</script>
</body></html>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _need_chromium():
    if _chromium() is None:
        if os.environ.get("CQ_REQUIRE_ALL") == "1":
            pytest.fail("CQ_REQUIRE_ALL=1 but no chromium on PATH (apt-get install -y chromium)")
        pytest.skip("no chromium on PATH (apt-get install -y chromium); CI sets CQ_REQUIRE_ALL=1 to require it")


def _chromium_run(args: list[str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", "--virtual-time-budget=10000", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("width", [1400, 390])
def test_chromium_lays_the_page_out_without_overflow_or_error(run, width):
    """At a desktop's and a phone's width: nothing wider than the window, no error, every
    image loads, the results table sorts and filters; screenshots kept for a look."""
    _need_chromium()
    height, window = 2400, max(width, 800)
    out = run["out"]  # beside the page: same relative URLs
    html = run["html"].replace('loading="lazy"', 'loading="eager"').replace("<head>", "<head>" + MEASURE, 1)
    (out / f"measure-{width}.html").write_text(html, encoding="utf-8")
    host = out / f"host-{width}.html"
    host.write_text(HOST.format(src=f"measure-{width}.html", width=width, height=height), encoding="utf-8")
    dom = _chromium_run([f"--window-size={window},{height}", "--dump-dom", host.as_uri()]).stdout
    found = re.search(r'<pre id="cq-measure">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    m = json.loads(unescape(found.group(1)))
    assert m["innerWidth"] == width
    assert m["scrollWidth"] <= m["innerWidth"], m
    assert m["errors"] == []
    assert m["sorted"] and set(m["filtered"]) == {"octree"}
    assert m["cards"] == len(IMAGES) + len(BROKEN) + 1  # + the stub's image
    shots = Path(os.environ.get("CQ_SCREENSHOTS", run["root"]))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / f"report-{width}.png"
    _chromium_run([f"--window-size={window},{height}", f"--screenshot={shot}", host.as_uri()])
    with Image.open(shot) as im:
        im.crop((0, 0, width, height)).save(shot)
    with Image.open(shot) as im:
        assert len(im.convert("RGB").getcolors(1 << 24)) > 2000  # photographs, not blank boxes


# --- the workflow's report rule: declared history, final history state, snakemake --report -----

@pytest.mark.slow
def test_workflow_report_reads_declared_history_and_feeds_snakemake_report(tmp_path):
    """The report rule takes history.jsonl as an input: a second run has nothing to do, a
    rebuilt page lists the first run as finished (never "running"), and `snakemake --report`
    carries cq's summary and table."""
    from conftest import snakemake, write_tiny_photos

    write_tiny_photos(tmp_path / "images")
    (tmp_path / "test.yaml").write_text("input_dir: images\nresults_dir: results\nmethods: [median_cut, octree]\n")
    snakemake(tmp_path)
    results = tmp_path / "results"
    (first,) = [json.loads(line) for line in (results / "history.jsonl").read_text().splitlines()]
    assert "Nothing to be done" in snakemake(tmp_path, "--dry-run").stdout
    page = (results / "report.html").read_text(encoding="utf-8")
    assert 'id="history"' not in page  # built before any run had finished
    snakemake(tmp_path, "--forcerun", "report")
    page = (results / "report.html").read_text(encoding="utf-8")
    history = page[page.index('<h2 id="history">'):page.index("<footer>")]
    assert first["start"] in history and first["end"] in history and "running" not in history
    assert "Nothing to be done" in snakemake(tmp_path, "--dry-run").stdout
    snakemake(tmp_path, "--report", str(tmp_path / "smk.zip"))
    with zipfile.ZipFile(tmp_path / "smk.zip") as z:
        names = z.namelist()
        summary = [n for n in names if n.endswith("/summary.tsv")]
        assert summary and any(n.endswith("/report.csv") for n in names)
        assert z.read(summary[0]).decode().splitlines()[1].startswith("median_cut\t4\t4\t0\t")
        assert "cq quantized every image" in z.read([n for n in names if n.endswith("report.html")][0]).decode()
