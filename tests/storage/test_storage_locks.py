"""Lock holders seen through their flock: a dead holder in another container (another pid namespace,
where the pid rule is blind) is broken at once, a live one never, an unfinished lock only by age."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

import storage.locks
from storage.store import LockTimeout, Store

# Holds the lock of ref s/d/c/k in a store until killed.
HOLDER = """
import sys, time
from storage.store import Store
store = Store(sys.argv[1])
with store.lock(store.ref("s", "d", "c", "k")):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "artifacts"))


@pytest.fixture
def other_container(monkeypatch):
    """This process looks like it runs in another pid namespace: holders' pids say nothing to it."""
    monkeypatch.setattr(storage.locks, "_pid_space", lambda: "another-container")


@pytest.fixture
def holder(store):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store.root], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _lock_path(store):
    ref = store.ref("s", "d", "c", "k")
    return ref, os.path.join(os.path.dirname(ref.path), ".lock-k")


def test_holder_sigkilled_in_another_pid_namespace_is_broken_at_once(store, holder, other_container):
    ref, lock_path = _lock_path(store)
    theirs = json.load(open(lock_path))
    assert theirs["pid"] == holder.pid and theirs["flock"] is True
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with store.lock(ref, stale_after=3600, timeout=5):
        waited = time.monotonic() - start
        assert json.load(open(lock_path))["token"] != theirs["token"]
    assert waited < 2
    assert not os.path.exists(lock_path)
    assert [n for n in os.listdir(os.path.dirname(lock_path)) if "broken" in n] == []


def test_live_holder_in_another_pid_namespace_is_waited_for(store, holder, other_container):
    ref, lock_path = _lock_path(store)
    theirs = json.load(open(lock_path))["token"]
    with pytest.raises(LockTimeout):
        with store.lock(ref, stale_after=3600, timeout=0.5):
            pass
    assert holder.poll() is None
    assert json.load(open(lock_path))["token"] == theirs


@pytest.mark.parametrize(
    "body",
    [
        b"",  # a holder between its create and its flock, or one that died there
        b'{"host": "h", "pid": 1, "tok',  # a holder cut off while writing
        b'{"host": "h", "pid": 1, "token": "theirs"}',  # a holder without flock (older, or no flock support)
    ],
)
def test_free_flock_on_a_lock_not_saying_flock_leaves_it_to_the_age_rule(store, other_container, body):
    ref, lock_path = _lock_path(store)
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "wb") as f:
        f.write(body)
    with pytest.raises(LockTimeout):
        with store.lock(ref, stale_after=3600, timeout=0.3):
            pass
    assert open(lock_path, "rb").read() == body
    os.utime(lock_path, (time.time() - 100, time.time() - 100))
    with store.lock(ref, stale_after=10, timeout=2):  # past stale_after it is broken as before
        pass
    assert not os.path.exists(lock_path)


def test_lock_works_without_flock_support(store, monkeypatch, other_container):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks available")

    monkeypatch.setattr(storage.locks.fcntl, "flock", no_flock)
    ref, lock_path = _lock_path(store)
    with store.lock(ref, stale_after=3600, timeout=1):
        assert json.load(open(lock_path))["flock"] is False
        with pytest.raises(LockTimeout):  # not mistaken for a dead holder: its flock was never there
            with store.lock(ref, stale_after=3600, timeout=0.3):
                pass
    assert not os.path.exists(lock_path)


def test_release_removes_the_lock_file_and_drops_the_flock(store):
    ref, lock_path = _lock_path(store)
    lock = storage.locks.FileLock(store.fs, True, lock_path, lock_path)
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    assert lock.create("mine") and lock._fd is not None
    held, age, orphaned = lock.read()
    assert held["token"] == "mine" and held["flock"] is True and not orphaned
    lock.release("mine")
    assert lock._fd is None and not os.path.exists(lock_path)


def test_live_holder_keeps_its_lock_even_when_its_heartbeat_looks_stale(store, holder, other_container, monkeypatch):
    ref, lock_path = _lock_path(store)
    theirs = json.load(open(lock_path))["token"]
    os.utime(lock_path, (time.time() - 100, time.time() - 100))  # a heartbeat that stalled
    monkeypatch.setattr(storage.locks.socket, "gethostname", lambda: "another-host")  # the age rule applies
    with pytest.raises(LockTimeout):
        with store.lock(ref, stale_after=10, timeout=0.5):
            pass
    assert json.load(open(lock_path))["token"] == theirs  # its flock proved it alive


def test_breakers_racing_for_a_dead_holders_lock_hold_it_one_at_a_time(store, holder, other_container):
    ref, lock_path = _lock_path(store)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    inside, overlaps, entered = [0], [], []
    guard = threading.Lock()
    start = threading.Barrier(6)

    def contender(i: int) -> None:
        start.wait()
        with store.lock(ref, stale_after=3600, timeout=20, poll=0.01):
            with guard:
                inside[0] += 1
                overlaps.append(inside[0])
                entered.append(i)
            time.sleep(0.02)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(entered) == list(range(6)) and max(overlaps) == 1
    assert not os.path.exists(lock_path)
    assert [n for n in os.listdir(os.path.dirname(lock_path)) if "broken" in n] == []


def test_stale_lock_on_a_remote_filesystem_is_broken_by_age(tmp_path):
    store = Store(f"memory://realnet-locks-{uuid.uuid4().hex}", scratch_dir=tmp_path / "cache")
    ref = store.ref("s", "d", "c", "k")
    path = f"{store._parent(ref)}/.lock-k"
    store.fs.pipe_file(path, json.dumps({"host": "gone", "pid": 1, "time": time.time() - 100,
                                         "token": "theirs"}).encode())
    with pytest.raises(LockTimeout):
        with store.lock(ref, stale_after=3600, timeout=0.3):
            pass
    with store.lock(ref, stale_after=10, timeout=2):
        assert json.loads(store.fs.cat_file(path))["token"] != "theirs"
    assert not store.fs.exists(path)
