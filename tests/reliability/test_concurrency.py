"""Concurrent runs: the same key is built once (create-if-absent lock file + manifest-last publish),
and runs of different categories never wait for each other (one lock per artifact key)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from reliability._helpers import (
    FAST,
    REPO,
    STAGES,
    complete,
    console_script,
    lock_files,
    run_args,
    scratch_dirs,
    stage_dir,
    subprocess_env,
)

from storage.arrays import open_image_array, verify_image_array
from storage.store import Store
from storage.tables import load


def test_two_runs_of_the_same_category_build_each_artifact_once(demo_data, tmp_path):
    root = tmp_path / "artifacts"
    cmd = [*console_script(), *run_args(root, demo_data), "--json"]
    logs = [open(tmp_path / f"run{i}.{s}", "w") for i in range(2) for s in ("out", "err")]
    # Two real `realnet run --no-prefect` processes, started at once.
    procs = [subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=logs[2 * i], stderr=logs[2 * i + 1])
             for i in range(2)]
    try:
        codes = [p.wait(240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for f in logs:
            f.close()
    errs = [(tmp_path / f"run{i}.err").read_text() for i in range(2)]
    assert codes == [0, 0], errs

    summaries = [json.loads((tmp_path / f"run{i}.out").read_text()) for i in range(2)]
    for stage in STAGES:
        # Exactly one folder per stage, complete, and no leftovers of the loser of the race.
        parent = stage_dir(root, stage)
        assert sorted(p.name for p in parent.iterdir()) == complete(root, stage), stage
        assert len(complete(root, stage)) == 1
        assert not scratch_dirs(root, stage) and not lock_files(root, stage)
        rows = [next(r for r in s["stages"] if r["stage"] == stage) for s in summaries]
        assert rows[0]["key"] == rows[1]["key"]
        # One run built it; the other waited for the lock, then found the manifest and reused it.
        assert sorted(r["status"] for r in rows) == ["ran", "reused"], rows
    # No corrupted file: every table loads, the Zarr array reads back whole.
    for table in ("loss_log", "afs", "train_log", "metrics", "scores"):
        assert len(load(table, str(root))) > 0, table
    (sia,) = complete(root, "generate_sia")
    zpath = stage_dir(root, "generate_sia") / sia / "sia.zarr"
    verify_image_array(zpath, 8)
    assert np.asarray(open_image_array(zpath)[:]).shape[0] == 8
    for ref in Store(str(root)).list():
        Store(str(root)).verify(ref)  # every file has the size its manifest recorded


def test_runs_of_different_categories_never_block_each_other(realnet, demo_data, tmp_path):
    from flows.plan import make_config
    from stages import dag
    from stages.common import stage_ref

    root = tmp_path / "artifacts"
    store = Store(str(root))
    cfg = make_config("demo", FAST, "demo", {"demo": str(demo_data)})
    brick_ref = stage_ref(dag.MODULES["train_diffusion"], cfg, store, "demo", "brick", {})
    with store.lock(brick_ref, timeout=5):  # someone is building brick's diffusion model
        brick = realnet.start(run_args(root, demo_data, "brick"))
        grass = realnet.start(run_args(root, demo_data, "grass"))
        try:
            assert grass.wait(150) == 0, grass.stderr
            assert [len(complete(root, s, "grass")) for s in STAGES] == [1] * len(STAGES)
            # brick, meanwhile, waits for the lock of its own key and has built nothing.
            time.sleep(0.5)
            assert brick.alive(), brick.stderr
            assert all(complete(root, s, "brick") == [] for s in STAGES)
        finally:
            if brick.alive():
                brick.kill()


def _planted_lock(store: Store, ref, **info) -> Path:
    import os
    import socket

    from storage.locks import _pid_space, _proc_start

    path = Path(ref.path).parent / f".lock-{ref.key}"
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "token": "theirs",
            "pid_space": _pid_space(), "pid_start": _proc_start(os.getpid())}
    path.write_text(json.dumps({**base, **info}))
    return path


def test_fresh_lock_of_a_reused_pid_is_broken_but_a_live_holder_is_waited_for(tmp_path):
    store = Store(str(tmp_path / "a"))
    ref = store.ref("s", "d", "c", "k")
    _planted_lock(store, ref)  # held by this very (alive) process: wait
    with pytest.raises(TimeoutError):
        with store.lock(ref, timeout=0.3):
            pass
    _planted_lock(store, ref, pid_start="1")  # the pid now belongs to a later process: holder is gone
    with store.lock(ref, timeout=2):
        pass
    _planted_lock(store, ref, pid_space="another-container")  # cannot see its pids: only age counts
    with pytest.raises(TimeoutError):
        with store.lock(ref, timeout=0.3):
            pass
