"""Hostile and odd input, all at once: ONE real nightly run over a folder holding every case.

Every good image gets its results, every bad one is an error row of the report with its
message, what discovery skips (symlink loops, a link out of the folder) is listed on the page,
and nothing is written outside the results, logs, benchmarks and .snakemake folders: the input
folder is byte-identical afterwards. Reading each case alone is unit-tested in
tests/test_imageio.py; this is the workflow over all of them together.

The unreadable file (permissions) has its own run below, as a user without root's powers:
discovery skips it with a warning and the run goes on.
"""

import csv
import hashlib
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import NIGHTLY, command, env, tiny_photo, write_tiny_photos
from cq.discover import result_path

pytestmark = pytest.mark.slow

METHODS = ["median_cut", "octree"]
GOOD = {  # relative path -> what the record's notes must mention (or None)
    "chelsea.jpg": None,
    "rocket.jpg": None,
    "rocket.png": None,
    'Ünï côdé/astro "naut" <script>.png': None,
    "<b>\"quoted\"</b> & 'folder'/<script>alert(\"x\")</script> it's.jpg": None,
    "été 2024/photo d'été avec espaces.png": None,
    "big 18 MP.jpg": None,
    "animated.gif": "animated",
    "sixteen bit.png": "scaled to 8 bits",
    "cmyk.jpg": "CMYK",
    "palette alpha.png": "transparency",
    "five colours.png": "5 distinct colours, fewer than k=37",
}
BAD = {  # relative path -> a piece of its error message
    "bomb.png": "decompression bomb",
    "truncated.jpg": "truncated",
    "zero.png": "empty file",
    "text.png": "not an image",
    "one pixel.png": "1 pixel, fewer than the k=37 colours",
}
SKIPPED = {"loop": "loops back", "a.png": "looping symlink", "escape.png": "outside the input folder"}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb() -> bytes:
    """A 100-byte PNG that claims 20000 x 20000 pixels (400 megapixels)."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * 61)) + png_chunk(b"IEND", b""))


def make_folder(images: Path, outside: Path) -> None:
    write_tiny_photos(images)
    photo = np.ascontiguousarray(tiny_photo("coffee", (100, 100)))
    for rel in ("<b>\"quoted\"</b> & 'folder'/<script>alert(\"x\")</script> it's.jpg",
                "été 2024/photo d'été avec espaces.png"):
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo).save(images / rel)
    from skimage import data
    Image.fromarray(data.astronaut()).resize((5196, 3464), Image.Resampling.BILINEAR).save(
        images / "big 18 MP.jpg", quality=60)
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1].copy())]
    frames[0].save(images / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    grey16 = (np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16)
    Image.fromarray(grey16).save(images / "sixteen bit.png")
    Image.fromarray(photo).convert("CMYK").save(images / "cmyk.jpg")
    pal = Image.fromarray(photo).quantize(64)
    pal.info["transparency"] = 0
    pal.save(images / "palette alpha.png", transparency=0)
    Image.fromarray(np.full((1, 1, 3), 9, np.uint8)).save(images / "one pixel.png")
    Image.fromarray(np.repeat(np.arange(5, dtype=np.uint8) * 50, 3 * 8).reshape(8, 5, 3)).save(images / "five colours.png")
    (images / "bomb.png").write_bytes(bomb())
    Image.fromarray(photo).save(images / "whole.jpg", quality=95)
    whole = (images / "whole.jpg").read_bytes()
    (images / "whole.jpg").unlink()
    (images / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (images / "zero.png").write_bytes(b"")
    (images / "text.png").write_text("<html>not a picture</html>\n")
    os.symlink(".", images / "loop")
    os.symlink("b.png", images / "a.png")
    os.symlink("a.png", images / "b.png")
    outside.mkdir()
    Image.fromarray(photo).save(outside / "secret.png")
    os.symlink(os.path.relpath(outside / "secret.png", images), images / "escape.png")


def tree(root: Path, skip=()) -> dict[str, tuple]:
    """Every path under ``root`` (not under ``skip``): its kind, mode, mtime and content hash."""
    out = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if os.path.islink(path):
                out[path] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[path] = ("dir", st.st_mode)
            else:
                out[path] = ("file", st.st_mode, st.st_mtime_ns,
                             hashlib.sha256(Path(path).read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def hostile():
    base = Path(tempfile.mkdtemp(prefix="cq-hostile-"))
    home = Path(tempfile.mkdtemp(prefix="cq-hostile-home-"))
    work, out = base / "work", base / "out"
    make_folder(work / "images", base / "outside")
    config = {"input_dir": "images", "methods": METHODS, "results_dir": str(out / "results"),
              "logs_dir": str(out / "logs"), "benchmarks_dir": str(out / "benchmarks")}
    (work / "test.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    before = tree(base)
    try:
        done = subprocess.run(command(work, profile=NIGHTLY), capture_output=True, text=True, timeout=300,
                              env=env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache")))
        assert done.returncode == 0, done.stdout + done.stderr
        with open(out / "results/report.csv", newline="", encoding="utf-8") as f:
            rows = {(r["image"], r["method"]): r for r in csv.DictReader(f)}
        yield base, before, done, rows
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def test_every_good_image_has_its_results(hostile):
    base, _, _, rows = hostile
    for image, note in GOOD.items():
        for method in METHODS:
            row = rows[image, method]
            assert row["status"] == "ok", (image, row["error"])
            assert int(row["n_colors"]) == 37
            assert note is None or note in row["notes"], (image, row["notes"])
            assert (Path(result_path(str(base / "out/results"), method, image, ".png"))).is_file()
    assert rows["big 18 MP.jpg", "octree"]["width"] == "5196"


def test_every_bad_image_is_an_error_row_with_its_message(hostile):
    base, _, _, rows = hostile
    for image, message in BAD.items():
        for method in METHODS:
            row = rows[image, method]
            assert row["status"] == "error" and message in row["error"] and image in row["error"], row
            assert not (Path(result_path(str(base / "out/results"), method, image, ".png"))).exists()
    assert {image for image, _ in rows} == set(GOOD) | set(BAD)


def test_skipped_entries_are_warned_and_listed_on_the_page(hostile):
    base, _, done, _ = hostile
    page = (base / "out/results/report.html").read_text(encoding="utf-8")
    skipped = page[page.index("Not read: skipped"):]
    for name, reason in SKIPPED.items():
        assert f"cq: warning: {name}: skipped" in done.stderr and reason in done.stderr
        assert f"{name}: skipped" in skipped
    assert page.count("<script") == 1  # names are escaped, never markup: the one script is the report's own


def test_nothing_is_written_outside_the_results_logs_benchmarks_and_snakemake_folders(hostile):
    base, before, _, _ = hostile
    allowed = {str(base / "out"), str(base / "work/.snakemake")}
    after = tree(base, skip=allowed)
    assert after == {p: v for p, v in before.items() if not any(p == a or p.startswith(a + "/") for a in allowed)}
    for folder in ("results", "logs", "benchmarks"):
        assert (base / "out" / folder).is_dir()


def test_an_unreadable_file_is_reported_and_does_not_stop_the_run(tmp_path):
    work = tmp_path / "work"
    photo = np.ascontiguousarray(tiny_photo("coffee", (100, 100)))
    (work / "images").mkdir(parents=True)
    Image.fromarray(photo).save(work / "images/good.png")
    Image.fromarray(photo).save(work / "images/unreadable.png")
    (work / "images/unreadable.png").chmod(0)
    (work / "test.yaml").write_text(yaml.safe_dump({"input_dir": "images", "methods": ["octree"]}))
    # Root reads a mode-000 file: run the workflow without CAP_DAC_OVERRIDE, as a user would.
    as_user = (["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                "--inh-caps=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])
    done = subprocess.run(as_user + command(work, profile=NIGHTLY), capture_output=True, text=True, timeout=300, env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    page = (work / "results/report.html").read_text(encoding="utf-8")
    assert "good.png" in (work / "results/report.csv").read_text()
    assert "unreadable.png" in page
