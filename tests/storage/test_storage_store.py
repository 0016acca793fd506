import json
import multiprocessing
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from storage.store import ArtifactRef, LockTimeout, Store, StoreError


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "artifacts"))


def _hidden(store, ref):
    parent = os.path.dirname(ref.path)
    return [n for n in os.listdir(parent) if n.startswith(".")] if os.path.isdir(parent) else []


def test_build_publishes_with_manifest_and_ref_is_small(store):
    ref = store.ref("evaluate", "mvtec", "bottle", "abc123")
    assert (
        not store.exists(ref) and store.list() == [] and store.latest("evaluate", "mvtec", "bottle") is None
    )
    with store.build(ref, {"version": "1", "cfg": {"a": 1}}) as staging:
        assert not store.exists(ref)
        (staging / "sub").mkdir()
        (staging / "sub" / "x.bin").write_bytes(b"12345")
    assert store.exists(ref)
    man = store.manifest(ref)
    assert man["meta"] == {"version": "1", "cfg": {"a": 1}}
    assert (man["stage"], man["dataset"], man["category"], man["key"]) == (
        "evaluate",
        "mvtec",
        "bottle",
        "abc123",
    )
    assert man["files"] == [{"path": "sub/x.bin", "size": 5}]
    assert man["created"].endswith("+00:00")
    assert store.list() == [ref] and store.list(stage="evaluate", category="bottle") == [ref]
    assert store.list(dataset="visa") == []
    assert store.latest("evaluate", "mvtec", "bottle") == ref
    assert open(ref.file("sub/x.bin"), "rb").read() == b"12345"
    assert _hidden(store, ref) == []
    assert pickle.loads(pickle.dumps(ref)) == ref
    assert ArtifactRef.from_dict(json.loads(json.dumps(ref.to_dict()))) == ref


def test_build_checksums(store):
    ref = store.ref("s", "d", "c", "k")
    with store.build(ref, {}, checksums=True) as staging:
        (staging / "f").write_bytes(b"abc")
    assert store.manifest(ref)["files"][0]["sha256"].startswith("ba7816bf")


def test_exception_inside_build_leaves_nothing(store):
    ref = store.ref("s", "d", "c", "k")
    with pytest.raises(RuntimeError, match="boom"):
        with store.build(ref, {}) as staging:
            (staging / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert not store.exists(ref) and not os.path.exists(ref.path)
    assert store.list() == [] and _hidden(store, ref) == []
    with pytest.raises(StoreError, match="missing or incomplete"):
        store.manifest(ref)


def test_unjsonable_meta_fails_before_work(store):
    with pytest.raises(TypeError, match="set"):
        with store.build(store.ref("s", "d", "c", "k"), {"bad": {1}}):
            pytest.fail("body must not run")


def test_leftover_folder_without_manifest_is_replaced_and_ignored(store):
    ref = store.ref("s", "d", "c", "k")
    os.makedirs(ref.path)
    open(ref.file("stale.bin"), "wb").close()
    assert not store.exists(ref) and store.list() == []
    with store.build(ref, {}) as staging:
        (staging / "new.bin").write_bytes(b"n")
    assert sorted(os.listdir(ref.path)) == ["manifest.json", "new.bin"]
    assert store.list() == [ref] and _hidden(store, ref) == []


def test_second_writer_keeps_the_first_artifact(store):
    ref = store.ref("s", "d", "c", "k")
    with store.build(ref, {"n": 1}) as staging:
        (staging / "a").write_bytes(b"first")
    created = store.manifest(ref)["created"]
    with store.build(ref, {"n": 2}) as staging:
        (staging / "a").write_bytes(b"second")
    assert open(ref.file("a"), "rb").read() == b"first"
    assert store.manifest(ref)["created"] == created and _hidden(store, ref) == []


def test_unlocked_concurrent_builds_of_one_ref_give_one_artifact(store):
    ref = store.ref("s", "d", "c", "k")
    barrier, errors = threading.Barrier(4), []

    def worker(i):
        try:
            with store.build(ref, {}) as staging:
                (staging / "f").write_bytes(b"same")
                barrier.wait()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and store.list() == [ref] and _hidden(store, ref) == []


def test_scratch_is_kept_on_failure_and_adopted_without_copy(store):
    ref = store.ref("generate_sia", "mvtec", "bottle", "k")
    scratch = store.scratch(ref)
    assert scratch.name == ".partial-k" and scratch.parent == store.scratch(ref).parent
    (scratch / "shard0").write_bytes(b"done")
    with pytest.raises(KeyboardInterrupt):
        with store.build(ref, {}, from_scratch=True) as staging:
            assert staging == scratch
            raise KeyboardInterrupt
    assert (scratch / "shard0").read_bytes() == b"done" and not store.exists(ref)
    inode = os.stat(scratch / "shard0").st_ino
    with store.build(ref, {}, from_scratch=True) as staging:
        (staging / "shard1").write_bytes(b"also")
    assert store.exists(ref) and not scratch.exists()
    assert os.stat(ref.file("shard0")).st_ino == inode  # moved, not copied
    assert [f["path"] for f in store.manifest(ref)["files"]] == ["shard0", "shard1"]
    assert store.list() == [ref]


def test_latest_picks_newest_manifest(store):
    refs = [store.ref("s", "d", "c", k) for k in ("zzz", "aaa")]
    for r in refs:
        with store.build(r, {}) as staging:
            (staging / "f").write_bytes(b"x")
        time.sleep(0.01)
    assert store.latest("s", "d", "c") == refs[1]
    assert store.list() == sorted(refs, key=lambda r: r.key)


def test_bad_names_cannot_escape_the_root(store):
    for args in (("..", "d", "c", "k"), ("s", "a/b", "c", "k"), ("s", "d", "c", ".k"), ("s", "d", "", "k")):
        with pytest.raises(ValueError):
            store.ref(*args)
    forged = ArtifactRef("s", "d", "..", "k", "/etc")
    with pytest.raises(ValueError, match="category"):
        store.exists(forged)


def test_memory_root_end_to_end(tmp_path):
    import pandas as pd

    from storage.tables import load, write_table

    root = f"memory://realnet-test-{uuid.uuid4().hex}"
    store = Store(root, scratch_dir=tmp_path / "cache")
    store.check_writable()
    ref = store.ref("evaluate", "mvtec", "bottle", "k1")
    assert ref.path == f"memory:///{root[len('memory://') :]}/evaluate/mvtec/bottle/k1"
    with pytest.raises(ValueError):
        with store.build(ref, {}) as staging:
            write_table(pd.DataFrame({"auroc": [0.5]}), staging / "metrics.parquet")
            raise ValueError("no")
    assert not store.exists(ref) and store.list() == []
    with store.build(ref, {"v": 1}) as staging:
        write_table(pd.DataFrame({"auroc": [0.9]}), staging / "metrics.parquet")
        (staging / "maps").mkdir()
        (staging / "maps" / "a.png").write_bytes(b"png")
    assert store.exists(ref) and store.list() == [ref] and store.latest("evaluate", "mvtec", "bottle") == ref
    assert not staging.exists()
    with store.open(ref, "maps/a.png") as f:
        assert f.read() == b"png"
    df = load("metrics", root)
    assert df.to_dict("records") == [
        {"stage": "evaluate", "dataset": "mvtec", "category": "bottle", "artifact_key": "k1", "auroc": 0.9}
    ]
    local = store.local_copy(ref)
    assert (local / "maps" / "a.png").read_bytes() == b"png" and (local / "manifest.json").exists()
    # A crashed upload (files, no manifest) is neither listed nor kept.
    broken = store.ref("evaluate", "mvtec", "cable", "k2")
    store.fs.pipe_file(f"{store._folder(broken)}/junk", b"x")
    assert store.list(category="cable") == []
    with store.build(broken, {}) as staging:
        (staging / "ok").write_bytes(b"y")
    assert store.fs.ls(store._folder(broken), detail=False) and not store.fs.exists(
        f"{store._folder(broken)}/junk"
    )
    scratch = store.scratch(ref)
    assert str(scratch).startswith(str(tmp_path / "cache"))
    with store.lock(ref, timeout=1):
        with pytest.raises(LockTimeout):
            with store.lock(ref, timeout=0.2):
                pass
    with store.lock(ref, timeout=1):
        pass


def test_not_writable_root_is_reported(tmp_path):
    (tmp_path / "file.txt").write_text("not a folder")
    root = str(tmp_path / "file.txt" / "artifacts")
    store = Store(root)
    with pytest.raises(StoreError, match="file.txt/artifacts"):
        store.check_writable()
    with pytest.raises(StoreError, match="file.txt/artifacts"):
        with store.build(store.ref("s", "d", "c", "k"), {}):
            pass


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_root_is_reported(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="ro"):
            Store(str(ro)).check_writable()
    finally:
        ro.chmod(0o700)


def test_check_writable_succeeds_and_cleans_up(store):
    store.check_writable()
    assert os.listdir(store.root) == []


# -- locks --------------------------------------------------------------------------------------


def _build_once(root, counter_dir):
    store = Store(root)
    ref = store.ref("s", "d", "c", "k")
    with store.lock(ref, timeout=30):
        if store.exists(ref):
            return
        open(os.path.join(counter_dir, f"built-{os.getpid()}-{threading.get_ident()}"), "w").close()
        with store.build(ref, {}) as staging:
            time.sleep(0.2)
            (staging / "f").write_bytes(b"x")


def test_racing_threads_build_exactly_once(tmp_path, store):
    counter = tmp_path / "count"
    counter.mkdir()
    threads = [threading.Thread(target=_build_once, args=(store.root, str(counter))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(os.listdir(counter)) == 1 and len(store.list()) == 1


def test_racing_processes_build_exactly_once(tmp_path, store):
    counter = tmp_path / "count"
    counter.mkdir()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_build_once, args=(store.root, str(counter))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(os.listdir(counter)) == 1 and len(store.list()) == 1
    ref = store.list()[0]
    assert not os.path.exists(os.path.join(os.path.dirname(ref.path), ".lock-k"))


def test_different_refs_do_not_block(store):
    a, b = store.ref("s", "d", "c", "a"), store.ref("s", "d", "c", "b")
    held, release = threading.Event(), threading.Event()

    def holder():
        with store.lock(a):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(5)
        start = time.monotonic()
        with store.lock(b, timeout=2):
            waited = time.monotonic() - start
        assert waited < 0.5
        with pytest.raises(LockTimeout, match=".lock-a"):
            with store.lock(a, timeout=0.3):
                pass
    finally:
        release.set()
        t.join()
    with store.lock(a, timeout=1):
        pass


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(
    "host, pid, age, broken",
    [
        ("here", "dead", 100, True),  # old, dead holder on this host
        ("elsewhere", "alive", 100, True),  # old, other host: only age can tell
        ("here", "alive", 100, False),  # old but alive: a long stage, never broken
        ("here", "dead", 0, False),  # young: within stale_after
    ],
)
def test_stale_lock_policy(store, host, pid, age, broken):
    ref = store.ref("s", "d", "c", "k")
    lock_path = os.path.join(os.path.dirname(ref.path), ".lock-k")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    info = {
        "host": socket.gethostname() if host == "here" else "some-other-host",
        "pid": _dead_pid() if pid == "dead" else os.getpid(),
        "time": time.time() - age,
        "token": "theirs",
    }
    with open(lock_path, "w") as f:
        json.dump(info, f)
    os.utime(lock_path, (time.time() - age, time.time() - age))
    if broken:
        with store.lock(ref, stale_after=10, timeout=2):
            assert json.load(open(lock_path))["token"] != "theirs"
        assert not os.path.exists(lock_path)
    else:
        with pytest.raises(LockTimeout):
            with store.lock(ref, stale_after=10, timeout=0.3):
                pass
        assert json.load(open(lock_path))["token"] == "theirs"
    assert [n for n in os.listdir(os.path.dirname(lock_path)) if "broken" in n] == []
