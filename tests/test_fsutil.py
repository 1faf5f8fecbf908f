"""cq.fsutil: a reader never sees half a file, and files get the usual mode."""

import hashlib
import os

import pytest

from cq.fsutil import atomic_path, atomic_write_bytes, file_mode, file_sha256, write_if_changed


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("fsync", [True, False])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, fsync):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(OSError):
        with atomic_path(target, fsync=fsync) as tmp:
            open(tmp, "wb").write(b"half")
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


@pytest.mark.parametrize("fsync", [True, False])
def test_atomic_writes_make_ordinary_files_in_new_folders(tmp_path, fsync):
    target = tmp_path / "new/deeper/out.bin"
    atomic_write_bytes(target, b"x", fsync=fsync)
    assert target.read_bytes() == b"x"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask() == file_mode()


def test_the_new_content_replaces_the_file_whole(tmp_path):
    target = tmp_path / "r.json"
    target.write_bytes(b"old and longer")
    with atomic_path(target) as tmp:
        open(tmp, "wb").write(b"new")
        assert target.read_bytes() == b"old and longer"  # untouched until the block ends
    assert target.read_bytes() == b"new"


def test_write_if_changed_moves_the_mtime_only_on_a_change(tmp_path):
    target = tmp_path / "sub/listing.tsv"
    assert write_if_changed(target, "a\t1\n") is True
    os.utime(target, ns=(1, 1))
    assert write_if_changed(target, "a\t1\n") is False
    assert target.stat().st_mtime_ns == 1
    assert write_if_changed(target, "a\t2\n") is True
    assert target.read_text() == "a\t2\n" and target.stat().st_mtime_ns != 1
    target.write_bytes(b"\xff\xfe not utf-8")
    assert write_if_changed(target, "a\t2\n") is True


def test_file_sha256_reads_in_blocks(tmp_path):
    data = os.urandom((1 << 20) + 123)  # more than one block
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()
