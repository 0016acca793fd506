"""SIGKILL a real ``realnet run --no-prefect`` process at the dangerous moments, then rerun it.

After every kill: only folders with a manifest are artifacts (``Store.list`` and
``storage.tables.load`` ignore the rest), the rerun finishes without waiting out the dead run's
lock, Zarr arrays read back whole with exactly ``sia.num_images`` images, and training resumes from
its last checkpoint (``resumed_from_step`` / ``resumed_from_epoch`` in the manifest) instead of zero.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from reliability._helpers import (
    REPO,
    STAGES,
    assert_only_complete_listed,
    complete,
    lock_files,
    manifest,
    newest,
    run_args,
    scratch_dirs,
    stage_dir,
    wait_until,
)

from storage.arrays import open_image_array, verify_image_array
from storage.checkpoints import load_checkpoint
from storage.store import Store
from storage.tables import load


def _sigkill(child) -> None:
    rc = child.kill()
    assert rc == -9, f"expected death by SIGKILL, got exit code {rc}"


def _has_train_state(root, stage):
    return lambda: any((d / "train_state.pt").exists() for d in scratch_dirs(root, stage))


def test_kill_during_train_diffusion_resumes_from_checkpoint(realnet, demo_data, tmp_path):
    root = tmp_path / "artifacts"
    args = run_args(root, demo_data, "brick", "diffusion.steps=24", "diffusion.checkpoint_every=3")
    child = realnet.start(args)
    wait_until(_has_train_state(root, "train_diffusion"), child)
    _sigkill(child)

    assert complete(root, "train_diffusion") == []
    assert_only_complete_listed(root)
    assert lock_files(root, "train_diffusion"), "the killed run should have left its lock behind"
    (scratch,) = scratch_dirs(root, "train_diffusion")
    saved_step = int(load_checkpoint(scratch / "train_state.pt")["step"])
    assert 3 <= saved_step < 24 and saved_step % 3 == 0

    start = time.monotonic()
    rerun = realnet(args)
    assert rerun.rc == 0, rerun.stderr
    assert time.monotonic() - start < 150  # the dead run's lock is broken at once, not after 1 h
    meta = manifest(root, "train_diffusion")["meta"]
    assert meta["resumed_from_step"] == saved_step and meta["steps"] == 24
    # The log carries over from the checkpoint: one row per step, none lost or repeated.
    assert load("loss_log", str(root))["step"].tolist() == list(range(1, 25))
    assert [len(complete(root, s)) for s in STAGES] == [1] * len(STAGES)
    assert not lock_files(root, "train_diffusion") and not scratch_dirs(root, "train_diffusion")


def _done_shards(root) -> list[int]:
    for d in scratch_dirs(root, "generate_sia"):
        progress = d / "sia.zarr" / "images.progress.json"
        if progress.exists():
            return json.loads(progress.read_text())["done"]
    return []


def test_kill_during_generate_sia_keeps_finished_shards(realnet, artifacts, demo_data):
    # The baseline's diffusion model is reused: only generate_sia and what follows run.
    args = run_args(artifacts, demo_data, "brick", "sia.num_images=16", "sia.shard_images=4",
                    "sia.batch_size=2", "sia.sampling_steps=8")
    old = complete(artifacts, "generate_sia")
    child = realnet.start(args)
    wait_until(lambda: bool(_done_shards(artifacts)), child)
    _sigkill(child)

    assert complete(artifacts, "generate_sia") == old
    assert_only_complete_listed(artifacts)
    (scratch,) = scratch_dirs(artifacts, "generate_sia")
    done = _done_shards(artifacts)
    assert 1 <= len(done) < 4

    def shard(zarr_dir, i):
        return zarr_dir / "images" / "c" / str(i) / "0" / "0" / "0"

    before = {i: (shard(scratch / "sia.zarr", i).stat().st_mtime_ns, shard(scratch / "sia.zarr", i).read_bytes())
              for i in done}

    rerun = realnet(args)
    assert rerun.rc == 0, rerun.stderr
    key = newest(artifacts, "generate_sia")
    assert key not in old and len(complete(artifacts, "generate_sia")) == 2
    zpath = stage_dir(artifacts, "generate_sia") / key / "sia.zarr"
    verify_image_array(zpath, 16)  # every shard present and decodable
    images = np.asarray(open_image_array(zpath)[:])
    assert images.shape[0] == 16 and images.reshape(16, -1).max(axis=1).min() > 0  # no blank image
    strength = np.asarray(open_image_array(zpath, name="strength")[:])
    assert not np.isnan(strength).any() and ((strength >= 0.1) & (strength <= 0.2)).all()
    for i, (mtime, data) in before.items():  # resumed: the finished shards were not generated again
        assert shard(zpath, i).stat().st_mtime_ns == mtime and shard(zpath, i).read_bytes() == data
    assert manifest(artifacts, "generate_sia", key)["meta"]["num_images"] == 16
    assert not scratch_dirs(artifacts, "generate_sia")


def test_kill_during_train_realnet_resumes_from_checkpoint(realnet, artifacts, demo_data):
    args = run_args(artifacts, demo_data, "brick", "train.epochs=10", "train.checkpoint_every=2")
    child = realnet.start(args)
    wait_until(_has_train_state(artifacts, "train_realnet"), child)
    _sigkill(child)

    assert_only_complete_listed(artifacts)
    (scratch,) = scratch_dirs(artifacts, "train_realnet")
    saved_epoch = int(load_checkpoint(scratch / "train_state.pt")["epoch"])
    assert 2 <= saved_epoch < 10

    rerun = realnet(args)
    assert rerun.rc == 0, rerun.stderr
    meta = manifest(artifacts, "train_realnet", newest(artifacts, "train_realnet"))["meta"]
    assert meta["resumed_from_epoch"] == saved_epoch and meta["epochs"] == 10
    assert load("train_log", str(artifacts))["epoch"].tolist() == list(range(1, 11))
    assert not scratch_dirs(artifacts, "train_realnet")


@pytest.mark.parametrize("fault", ["publish-after-manifest", "publish-mid-manifest"])
def test_kill_while_finalising_an_artifact(realnet, artifacts, demo_data, fault):
    # Only evaluate runs (its config changed), and the process dies while publishing its artifact.
    args = run_args(artifacts, demo_data, "brick", "evaluate.overlays=1")
    old = complete(artifacts, "evaluate")
    child = realnet(args, fault=f"{fault}:evaluate")
    assert child.rc == -9, child.stderr

    assert complete(artifacts, "evaluate") == old  # the half-published artifact does not exist
    assert_only_complete_listed(artifacts)
    assert load("metrics", str(artifacts))["artifact_key"].tolist() == old
    (scratch,) = scratch_dirs(artifacts, "evaluate")
    if fault == "publish-after-manifest":
        assert (scratch / "manifest.json").exists()  # written, but inside the hidden scratch folder
    else:
        assert not (scratch / "manifest.json").exists() and list(scratch.glob(".manifest.json.*.tmp"))

    rerun = realnet(args)
    assert rerun.rc == 0, rerun.stderr
    key = newest(artifacts, "evaluate")
    assert key not in old and len(complete(artifacts, "evaluate")) == 2
    files = [f["path"] for f in manifest(artifacts, "evaluate", key)["files"]]
    assert "metrics.parquet" in files and not [f for f in files if f.endswith(".tmp")], files
    assert load("metrics", str(artifacts))["artifact_key"].tolist() == [key]
    assert not scratch_dirs(artifacts, "evaluate")


def test_stray_temp_files_of_a_killed_write_are_not_published(tmp_path):
    store = Store(str(tmp_path / "a"))
    ref = store.ref("s", "d", "c", "k")
    scratch = store.scratch(ref)
    (scratch / "model.pt").write_bytes(b"weights")
    (scratch / ".model.pt.0123abcd.tmp").write_bytes(b"half")  # save_checkpoint killed mid-write
    (scratch / "sub").mkdir()
    (scratch / "sub" / "images.progress.json.tmp").write_text("{")  # ShardProgress killed mid-write
    with store.build(ref, {}, from_scratch=True):
        pass
    assert [f["path"] for f in store.manifest(ref)["files"]] == ["model.pt"]
    assert sorted(os.listdir(ref.path)) == ["manifest.json", "model.pt", "sub"]


def test_lock_of_a_killed_holder_is_broken_at_once(tmp_path):
    """The lock a SIGKILLed run leaves behind does not make the next run wait for stale_after."""
    import subprocess
    import sys

    store = Store(str(tmp_path / "a"))
    ref = store.ref("s", "d", "c", "k")
    code = ("import sys, time; from storage.store import Store; s = Store(sys.argv[1]); "
            "r = s.ref('s', 'd', 'c', 'k'); cm = s.lock(r); cm.__enter__(); print('held', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code, store.root], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError):
            with store.lock(ref, timeout=0.3):  # alive: waited for, however long (stale_after = 1 h)
                pass
    finally:
        proc.kill()
        proc.wait()
    start = time.monotonic()
    with store.lock(ref, timeout=5):  # dead: broken at once
        pass
    assert time.monotonic() - start < 2
