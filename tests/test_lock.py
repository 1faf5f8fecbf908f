"""cq's lock on a results folder (cq/lock.py): one run at a time whatever the working
directory, a refusal naming the live holder, and a dead holder's lock free at once, the
lock window (taken, identity not yet written) included."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import tmpfs

from cq import lock

HOLD = """
import sys, time
from cq import lock
held = lock.acquire(sys.argv[1], token=sys.argv[2] if len(sys.argv) > 2 else None)
print("held", flush=True)
time.sleep(60)
"""

# Holds the flock but dies before writing its identity: the lock window of issue 11.
HOLD_BARE = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""


def hold(code, *args):
    child = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait()


def test_a_live_holder_refuses_a_second_run_naming_it(tmp_path):
    child = hold(HOLD, tmp_path)
    try:
        with pytest.raises(lock.LockedError) as refused:
            lock.acquire(tmp_path)
        message = str(refused.value)
        assert "\n" not in message and f"pid {child.pid}" in message and str(tmp_path) in message
        owner = lock.read_owner(tmp_path)
        assert owner["pid"] == child.pid and owner["boot_id"] == lock.boot_id() and owner["start_ticks"]
    finally:
        kill(child)


def test_a_killed_holder_frees_the_lock_at_once(tmp_path):
    child = hold(HOLD, tmp_path)
    kill(child)
    with lock.acquire(tmp_path) as held:
        assert lock.read_owner(tmp_path)["pid"] == os.getpid() == held.owner["pid"]
    with lock.acquire(tmp_path):  # released on exit
        pass


def test_killed_inside_the_lock_window_never_blocks(tmp_path):
    child = hold(HOLD_BARE, tmp_path)
    with pytest.raises(lock.LockedError, match="not readable"):
        lock.acquire(tmp_path)
    kill(child)
    lock.acquire(tmp_path).release()


def test_the_same_folder_through_another_path_is_the_same_lock(tmp_path):
    (tmp_path / "a").mkdir()
    os.symlink(tmp_path / "a", tmp_path / "b")
    with lock.acquire(tmp_path / "a"):
        with pytest.raises(lock.LockedError):
            lock.acquire(tmp_path / "b")
        cwd = os.getcwd()
        try:  # and from another working directory, by a relative path
            os.chdir(tmp_path)
            with pytest.raises(lock.LockedError):
                lock.acquire("a")
        finally:
            os.chdir(cwd)


def test_held_by_parent_only_through_a_live_holders_descriptor(tmp_path, monkeypatch):
    child = hold(HOLD, tmp_path, "tok123")
    try:
        monkeypatch.setenv(lock.TOKEN_ENV, "tok123")  # a token alone proves nothing
        assert not lock.held_by_parent(tmp_path)
    finally:
        kill(child)
    monkeypatch.setenv(lock.FD_ENV, "987")  # not an open descriptor
    assert not lock.held_by_parent(tmp_path)
    held = lock.ensure(tmp_path)  # so this process takes it
    assert held is not None and lock.read_owner(tmp_path)["pid"] == os.getpid()
    assert lock.run_id() == held.owner["token"]
    held.release()

# --- issue 18: the lock survives its record's loss; a folder that cannot hold it is one line ---

def test_deleting_or_replacing_the_lock_file_lets_no_second_run_in(tmp_path):
    child = hold(HOLD, tmp_path)
    try:
        lock.lock_path(tmp_path).unlink()  # rm results/.history/lock during a run
        with pytest.raises(lock.LockedError, match="another run"):
            lock.acquire(tmp_path)
        lock.lock_path(tmp_path).write_text("{}")  # or a new file in its place
        with pytest.raises(lock.LockedError):
            lock.acquire(tmp_path)
        assert lock.read_owner(tmp_path) == {}  # the refused run wrote nothing
    finally:
        kill(child)
    lock.acquire(tmp_path).release()


def test_a_folder_swapped_between_open_and_flock_is_not_the_one_locked(tmp_path, monkeypatch):
    results = tmp_path / "results"
    real = lock._try_flock
    swaps = []

    def swap_then_flock(fd):
        if not swaps:  # the folder is renamed away and a new one made, once
            os.rename(results, tmp_path / "old")
            results.mkdir()
            swaps.append(fd)
        return real(fd)
    monkeypatch.setattr(lock, "_try_flock", swap_then_flock)
    with lock.acquire(results) as held:
        assert os.fstat(held.fd).st_ino == results.stat().st_ino != (tmp_path / "old").stat().st_ino


@pytest.fixture
def read_only(tmp_path):
    """A read-only mount (root); the test skips elsewhere."""
    with tmpfs(tmp_path / "ro", "ro,size=64k") as mounted:
        if not mounted:
            pytest.skip("needs root to mount a read-only file system")
        yield tmp_path / "ro"


@pytest.mark.parametrize("case", ["dangling symlink", "a file", "lock is a folder", "history is a file"])
def test_a_results_folder_that_cannot_hold_the_lock_is_one_line(tmp_path, case):
    results = tmp_path / "results"
    if case == "dangling symlink":
        os.symlink(tmp_path / "unmounted", results)
    elif case == "a file":
        results.write_text("")
    elif case == "lock is a folder":
        lock.lock_path(results).mkdir(parents=True)
    else:
        results.mkdir()
        (results / ".history").write_text("")
    with pytest.raises(lock.LockError) as refused:
        lock.acquire(results)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("cq: error: ") and str(results) in message
    assert not (tmp_path / "unmounted").exists()  # a dangling link's target is not created
    if case == "dangling symlink":
        assert "symlink to a missing folder" in message
    if case == "lock is a folder":
        assert "is a folder" in message
        lock.lock_path(results).rmdir()
        lock.acquire(results).release()  # and the lock was not left held


@pytest.mark.parametrize("inside", [False, True])
def test_a_read_only_results_mount_is_one_line(read_only, inside):
    results = read_only / "results" if inside else read_only
    with pytest.raises(lock.LockError, match="Read-only file system") as refused:
        lock.acquire(results)
    assert "\n" not in str(refused.value)


CHILD_CHECK = """
import sys
from cq import lock
print(lock.held_by_parent(sys.argv[1]), lock.run_id())
"""


def test_a_child_holds_its_parents_lock_through_the_inherited_descriptor(tmp_path):
    with lock.acquire(tmp_path) as held:
        lock.lock_path(tmp_path).unlink()  # the record is gone: the descriptor still proves it
        env = {**os.environ, **held.child_env()}
        child = subprocess.run([sys.executable, "-c", CHILD_CHECK, str(tmp_path)], env=env,
                               pass_fds=(held.fd,), capture_output=True, text=True, check=True)
        assert child.stdout.split() == ["True", held.owner["token"]]
        # A descriptor of the folder that does not hold the lock proves nothing.
        other = os.open(tmp_path, os.O_RDONLY)
        try:
            env[lock.FD_ENV] = str(other)
            child = subprocess.run([sys.executable, "-c", CHILD_CHECK, str(tmp_path)], env=env,
                                   pass_fds=(other,), capture_output=True, text=True, check=True)
            assert child.stdout.split()[0] == "False"
        finally:
            os.close(other)


def test_a_full_disk_does_not_stop_a_night_at_the_lock_record(tmp_path):
    """The holder's record is rewritten in place: once written, a full disk cannot refuse
    the next run (the machine found an atomic rewrite doing so)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        lock.acquire(disk, token="first").release()
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError, match="No space"):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        with lock.acquire(disk, token="second"):
            assert lock.read_owner(disk)["token"] == "second"
    finally:
        subprocess.run(["umount", str(disk)], check=True)
