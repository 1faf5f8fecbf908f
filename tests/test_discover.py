"""cq.discover: which files count as images, what is skipped and reported, result paths."""

import os
from pathlib import Path

import pytest

from cq.discover import (AUTO_PER_IMAGE_MAX, AUTO_SHARD_SIZE, assign_shards, discover, image_of_result,
                         normalize_extensions, read_listing, resolve_shard_size, result_path, shard_count,
                         shard_index, shard_listing, shard_name, write_if_changed)


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


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


def test_snakemake_wildcard_names_are_skipped_and_reported(tmp_path):
    touch(tmp_path, "{sample}.png", "{x,\\d+}.png", "{dir}/a.png", "ok.png")
    found = discover(tmp_path, ["png"])
    assert found.images == ["ok.png"]
    assert len(found.warnings) == 3 and all("wildcard" in w for w in found.warnings)


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


# --- shards ------------------------------------------------------------------------------------

def test_shard_size_auto_and_explicit():
    assert resolve_shard_size("auto", AUTO_PER_IMAGE_MAX) == 0
    assert resolve_shard_size("auto", AUTO_PER_IMAGE_MAX + 1) == AUTO_SHARD_SIZE
    assert resolve_shard_size(None, 10) == 0
    assert resolve_shard_size(0, 10**6) == 0 and resolve_shard_size(7, 3) == 7
    with pytest.raises(ValueError):
        resolve_shard_size(-1, 10)


def test_shard_count_is_a_power_of_two_with_at_most_shard_size_images_on_average():
    assert [shard_count(n, 10) for n in (0, 1, 10, 11, 20, 21, 40, 41)] == [1, 1, 1, 2, 2, 4, 4, 8]
    for n in (1, 999, 1000, 1001, 100_000):
        count = shard_count(n, 500)
        assert count & (count - 1) == 0 and n / count <= 500 and (count == 1 or n / count > 250)


def test_shard_index_is_stable_and_splits_in_two_when_the_count_doubles():
    images = [f"f{i // 100:03d}/img {i}.jpg" for i in range(2000)]
    assert shard_index("a.jpg", 1) == 0
    for image in images:
        i = shard_index(image, 64)
        assert shard_index(image, 128) in (i, i + 64)
    sizes = [len(v) for v in assign_shards(images, 100).values()]
    assert len(sizes) == 32 and sum(sizes) == 2000 and max(sizes) < 2 * 2000 / 32  # evenly spread


def test_shard_index_known_values():
    # The same in every process and Python version (not the salted hash()); pinned so that a
    # change of the hash, which would move every image to another shard, is noticed.
    assert [shard_index(name, 1 << 20) for name in ("a.jpg", "space/rocket.jpg")] == [173961, 24324]


def test_adding_an_image_changes_one_shard_only():
    images = [f"img{i:05d}.png" for i in range(3000)]
    before = assign_shards(images, 500)
    after = assign_shards(sorted(images + ["new/one.png"]), 500)
    changed = [name for name in after if after[name] != before.get(name)]
    assert len(changed) == 1 and "new/one.png" in after[changed[0]]
    assert set(before) <= set(after)


def test_shard_names_are_zero_padded_and_sorted():
    assert shard_name(7, 64) == "0007" and shard_name(12345, 65536) == "12345"
    names = list(assign_shards([f"{i}.png" for i in range(100)], 10))
    assert names == sorted(names) and all(len(n) == 4 for n in names)


def test_listing_changes_when_an_image_changes_and_round_trips_odd_names(tmp_path):
    names = ['a.png', 'tab\there.png', 'quo"te.png', 'Ünï côdé/été.png']
    touch(tmp_path, *names)
    listing = shard_listing(str(tmp_path), names + ["gone.png"])
    out = tmp_path / "out/0000.tsv"
    assert write_if_changed(out, listing) is True
    assert read_listing(out) == names + ["gone.png"]
    assert "gone.png\t-1\t-1" in listing
    mtime = out.stat().st_mtime_ns
    assert write_if_changed(out, shard_listing(str(tmp_path), names + ["gone.png"])) is False
    assert out.stat().st_mtime_ns == mtime
    (tmp_path / "a.png").write_bytes(b"changed")
    assert write_if_changed(out, shard_listing(str(tmp_path), names + ["gone.png"])) is True
    assert [p.name for p in out.parent.iterdir()] == ["0000.tsv"]  # no temporary file left
