"""Writes that fail for lack of disk space or quota name the file and the bytes needed, and leave the
last good file in place (no real full disk: the writers are made to fail as a full one does)."""

import errno
import os
from collections import namedtuple

import numpy as np
import pandas as pd
import pytest
import torch

import storage.checkpoints
import storage.space
from storage.arrays import create_image_array, write_shard
from storage.checkpoints import load_checkpoint, save_checkpoint
from storage.errors import OutOfSpace
from storage.store import Store, write_json_atomic
from storage.tables import write_table

TORCH_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 4032"
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def disk_with(monkeypatch):
    def set_free(free: int) -> None:
        monkeypatch.setattr(storage.space.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - free, free))
    return set_free


def _torch_save_that_fills_the_disk(obj, f):
    f.write(b"PK\x03\x04 partial")  # what torch writes before the disk is full
    raise RuntimeError(TORCH_FULL)


def _no_tmp_left(folder):
    return [n for n in os.listdir(folder) if n.endswith(".tmp")] == []


def test_torch_save_on_a_full_disk_names_the_file_and_bytes_and_keeps_the_old_checkpoint(
        tmp_path, monkeypatch, disk_with):
    path = tmp_path / "train_state.pt"
    save_checkpoint({"w": torch.ones(1000), "step": 2}, path)
    monkeypatch.setattr(storage.checkpoints.torch, "save", _torch_save_that_fills_the_disk)
    disk_with(100)
    with pytest.raises(OutOfSpace) as info:
        save_checkpoint({"w": torch.ones(1000), "step": 4}, path)
    text = str(info.value)
    assert f"writing {path}" in text and "needed 4,064 bytes" in text and "100 bytes free" in text, text
    assert "inline_container" not in text and info.value.errno == errno.ENOSPC
    assert load_checkpoint(path)["step"] == 2 and _no_tmp_left(tmp_path)


def test_a_torch_write_error_with_space_left_is_not_called_a_full_disk(tmp_path, monkeypatch, disk_with):
    monkeypatch.setattr(storage.checkpoints.torch, "save", _torch_save_that_fills_the_disk)
    disk_with(10**9)
    with pytest.raises(RuntimeError, match="inline_container") as info:
        save_checkpoint({"w": torch.ones(10)}, tmp_path / "x.pt")
    assert not isinstance(info.value, OutOfSpace)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_parquet_json_and_zarr_writes_out_of_space_or_quota(tmp_path, monkeypatch, disk_with, code):
    disk_with(7)

    def full(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", full)
    with pytest.raises(OutOfSpace, match=f"writing {tmp_path / 't.parquet'}: it needed [0-9,]+ bytes, 7 bytes free"):
        write_table(pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "t.parquet")

    monkeypatch.setattr("storage.store.json.dumps", lambda *a, **k: "{}")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutOfSpace, match=f"writing {tmp_path / 'm.json'}: it needed 2 bytes"):
        write_json_atomic(tmp_path / "m.json", {})
    monkeypatch.undo()
    disk_with(7)

    arr = create_image_array(tmp_path / "sia.zarr", 4, 8, 8, shard_images=2)
    monkeypatch.setattr(type(arr), "__setitem__", full)
    with pytest.raises(OutOfSpace, match=r"sia.zarr/images/c/1: it needed 384 bytes, 7 bytes free"):
        write_shard(arr, 1, np.zeros((2, 8, 8, 3), np.uint8))
    assert _no_tmp_left(tmp_path)


def test_store_publish_out_of_space_publishes_nothing(tmp_path, monkeypatch, disk_with):
    store = Store(str(tmp_path / "artifacts"))
    ref = store.ref("evaluate", "demo", "brick", "k")
    disk_with(0)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutOfSpace, match="manifest.json: it needed"), store.build(ref, {}) as staging:
        (staging / "f").write_bytes(b"123")
    assert not store.exists(ref) and store.list() == []
