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
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
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
    (tmp_path / ".history").mkdir()
    child = hold(HOLD_BARE, lock.lock_path(tmp_path))
    with pytest.raises(lock.LockedError, match="not readable yet"):
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


def test_held_by_parent_only_with_the_holders_token_while_it_lives(tmp_path, monkeypatch):
    child = hold(HOLD, tmp_path, "tok123")
    try:
        monkeypatch.setenv(lock.TOKEN_ENV, "tok123")
        assert lock.held_by_parent(tmp_path)
        monkeypatch.setenv(lock.TOKEN_ENV, "other")
        assert not lock.held_by_parent(tmp_path)
    finally:
        kill(child)
    monkeypatch.setenv(lock.TOKEN_ENV, "tok123")
    assert not lock.held_by_parent(tmp_path)  # its holder is gone
    held = lock.ensure(tmp_path)  # so this process takes it
    assert held is not None and lock.read_owner(tmp_path)["pid"] == os.getpid()
    held.release()
