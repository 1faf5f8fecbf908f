"""cq.discover: which files count as images, what is skipped and reported, result paths."""

import os
from pathlib import Path

import pytest

from conftest import touch

from cq.discover import (MAX_COMPONENT_BYTES, discover, image_of_result, normalize_extensions, result_key,
                         result_path)


def test_recursive_case_insensitive_and_sorted(tmp_path):
    touch(tmp_path, "b.JPG", "a.png", "sub/deeper/c.Jpeg", "notes.txt", "png", "noext", "sub/x.tiff")
    found = discover(tmp_path, ["jpg", ".JPEG", "png"])
    assert found.images == ["a.png", "b.JPG", "sub/deeper/c.Jpeg"]
    assert found.warnings == []


def test_odd_names_and_same_stem_are_kept(tmp_path):
    names = ['with space.jpg', 'quo"te\'s.png', '<script>alert(1)</script>.png', 'Ünï côdé/été.jpg',
             'a.jpg', 'a.png', 'a{b.jpg', '{}.png', '{a-b}.png', '<logs>.png']
    touch(tmp_path, *names)
    assert discover(tmp_path, ["jpg", "png"]).images == sorted(names)


def test_names_with_braces_or_angle_brackets_are_images_with_escaped_result_keys(tmp_path):
    names = ["{sample}.png", "{x,\\d+}.png", "{dir}/a.png", "<logs>.png", "ok.png"]
    touch(tmp_path, *names)
    found = discover(tmp_path, ["png"])
    assert found.images == sorted(names) and found.warnings == []
    assert result_key("{dir}/a.png") == "%7Bdir%7D/a.png" and result_key("<logs>.png") == "%3Clogs%3E.png"


def test_hidden_files_and_folders_are_skipped(tmp_path):
    touch(tmp_path, ".hidden.png", ".cache/a.png", "ok/.b.png", "ok/c.png")
    found = discover(tmp_path, ["png"])
    assert found.images == ["ok/c.png"] and found.warnings == []


def test_symlinks_inside_are_followed_loops_and_escapes_reported(tmp_path):
    root, outside = tmp_path / "in", tmp_path / "out"
    touch(root, "real/a.png")
    touch(outside, "secret.png")
    os.symlink(root / "real", root / "alias")            # a folder inside: followed
    os.symlink(root / "real/a.png", root / "b.png")      # a file inside: kept under its name
    os.symlink(root, root / "real/loop")                 # back to the root: a loop
    os.symlink(root / "real", root / "real/self")        # back to its own folder: a loop
    os.symlink(outside, root / "escape")                 # a folder outside
    os.symlink(outside / "secret.png", root / "s.png")   # a file outside
    os.symlink(root / "missing.png", root / "dead.png")  # broken
    found = discover(root, ["png"])
    assert found.images == ["alias/a.png", "b.png", "real/a.png"]
    text = "\n".join(found.warnings)
    for name in ("real/loop", "real/self", "escape", "s.png", "dead.png"):
        assert name in text, (name, text)
    assert "alias/loop" in text or "alias/self" in text  # the aliased folder's links, reported too


def test_unreadable_folder_is_a_warning(tmp_path, monkeypatch):
    touch(tmp_path, "a.png", "locked/b.png")
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover(tmp_path, ["png"])
    assert found.images == ["a.png"]
    assert found.warnings == ["locked: cannot read folder (Permission denied)"]


def test_missing_root_is_a_warning_not_an_exception(tmp_path):
    found = discover(tmp_path / "nope", ["png"])
    assert found.images == [] and "cannot read folder" in found.warnings[0]


def test_non_utf8_name_is_skipped_and_reported(tmp_path):
    (tmp_path / "ok.png").write_bytes(b"")
    try:
        (Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff.png"))).write_bytes(b"")
    except (OSError, UnicodeError):
        pytest.skip("file system refuses non-UTF-8 names")
    found = discover(tmp_path, ["png"])
    assert found.images == ["ok.png"] and "not valid UTF-8" in found.warnings[0]


def test_excluded_folders_are_not_walked(tmp_path):
    touch(tmp_path, "a.png", "results/kmeans/a.png.png")
    assert discover(tmp_path, ["png"], exclude=[tmp_path / "results"]).images == ["a.png"]


def test_no_file_is_opened(tmp_path, monkeypatch):
    touch(tmp_path, "a.png", "sub/b.png")
    import builtins

    monkeypatch.setattr(builtins, "open", lambda *a, **k: pytest.fail("discover opened a file"))
    assert discover(tmp_path, ["png"]).images == ["a.png", "sub/b.png"]


def test_result_paths_round_trip():
    path = result_path("results", "kmeans", "space/rocket.jpg", ".json")
    assert path == "results/kmeans/space/rocket.jpg.json"
    assert image_of_result("results", path) == ("kmeans", "space/rocket.jpg")
    with pytest.raises(ValueError):
        image_of_result("results", "results/kmeans/a.png", ".json")


def test_normalize_extensions():
    assert normalize_extensions([".JPG", "png"]) == {"jpg", "png"}


def test_a_long_name_gets_a_short_key_that_fits_and_stays_unique(tmp_path):
    long_a, long_b = "d/" + "é" * 120 + "a.png", "d/" + "é" * 120 + "b.png"
    key_a, key_b = result_key(long_a), result_key(long_b)
    assert key_a != key_b and key_a.startswith("d/é") and key_a.endswith(".png")
    assert len(key_a.split("/")[1].encode()) <= MAX_COMPONENT_BYTES
    assert result_key("space/rocket.jpg") == "space/rocket.jpg"
    assert result_key("x" * MAX_COMPONENT_BYTES) == "x" * MAX_COMPONENT_BYTES
    # Every file cq makes from a key can be created: record, its temporary file, log, benchmark.
    path = tmp_path / result_path("r", "kmeans", long_a, ".json")
    path.parent.mkdir(parents=True)
    path.write_text("{}")
    (path.parent / f".{path.name}.abcdefgh.tmp").write_text("")


# --- issue 18, break 8: result names collision-free by construction -------------------------

from hypothesis import example, given, settings, strategies as st  # noqa: E402

_PIECES = st.sampled_from(["a", "é", "日本", "~", ".", "png", "0123456789ab", "f", " ", "-", "{1}"])
_COMPONENT = st.lists(_PIECES, min_size=1, max_size=90).map("".join).filter(lambda c: c not in (".", ".."))
_NAME = st.lists(_COMPONENT, min_size=1, max_size=2).map("/".join)


def _fits_and_keeps(name: str, key: str) -> None:
    for part, short in zip(name.split("/"), key.split("/"), strict=True):
        assert len(short.encode()) <= MAX_COMPONENT_BYTES
        if len(part.encode()) <= MAX_COMPONENT_BYTES and not set(part) & set("~%{}<>"):
            assert short == part  # an ordinary name keeps itself


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@example(["é" * 130 + ".png"])  # its key, taken as a real name, was the key too (break 8)
@example(["x" * 250])
@given(st.lists(_NAME, min_size=1, max_size=4, unique=True))
def test_no_two_names_share_a_result_key_not_even_a_name_spelt_as_a_key(names):
    """A real file named exactly as another image's shortened key gets another key: the
    names plus every key taken as a name of its own map one to one."""
    everything = set(names) | {result_key(n) for n in names}
    keys = {n: result_key(n) for n in everything}
    assert len(set(keys.values())) == len(everything), keys
    for name, key in keys.items():
        _fits_and_keeps(name, key)
        assert result_key(key) != key or key == name  # a key reads back as itself only if unshortened


def test_a_file_named_as_a_long_images_key_has_its_own_result(tmp_path):
    long = "é" * 120 + ".png"  # 244 bytes: a name the file system takes
    touch(tmp_path, long, result_key(long))
    found = discover(tmp_path, ["png"])
    assert len(found.images) == 2 and len({result_key(i) for i in found.images}) == 2
