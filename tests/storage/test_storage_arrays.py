import json
import os

import numpy as np
import pytest

from storage.arrays import (
    ArrayCorruptError,
    ShardProgress,
    create_image_array,
    create_scalar_array,
    n_shards,
    open_image_array,
    read_attrs,
    read_rows,
    verify_image_array,
    write_attrs,
    write_shard,
)

N, H, W, S = 10, 8, 6, 4


def _images(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (N, H, W, 3), dtype=np.uint8)


def _generate(group, data, strengths, stop_after=None):
    """Mimics generate_sia: resume from progress, write whole shards, mark each when complete."""
    images = create_image_array(group, N, H, W, shard_images=S)
    strength = create_scalar_array(group, N, block=S)
    progress = ShardProgress(group, N, S)
    written = []
    for i in progress.pending():
        if stop_after is not None and len(written) == stop_after:
            return written  # the process "dies" here
        lo, hi = i * S, min((i + 1) * S, N)
        write_shard(images, i, data[lo:hi])
        write_shard(strength, i, strengths[lo:hi])
        progress.mark(i)
        written.append(i)
    return written


def test_layout_codecs_and_metadata(tmp_path):
    group = tmp_path / "sia.zarr"
    arr = create_image_array(group, N, H, W, shard_images=S, attrs={"source": tmp_path})
    assert arr.shape == (N, H, W, 3) and arr.dtype == np.uint8
    assert arr.chunks == (1, H, W, 3) and arr.shards == (S, H, W, 3)
    meta = json.loads((group / "images" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3 and meta["data_type"] == "uint8"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [S, H, W, 3]
    (sharding,) = meta["codecs"]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [1, H, W, 3]
    inner = sharding["configuration"]["codecs"]
    assert [c["name"] for c in inner] == ["bytes", "blosc"]
    assert inner[1]["configuration"]["cname"] == "zstd"
    assert inner[1]["configuration"]["shuffle"] == "bitshuffle"
    assert meta["attributes"] == {"source": str(tmp_path)}


def test_killed_generation_resumes_from_last_complete_shard(tmp_path):
    group = tmp_path / "sia.zarr"
    data, strengths = _images(), np.linspace(0.1, 0.2, N, dtype=np.float32)
    assert _generate(group, data, strengths, stop_after=2) == [0, 1]
    assert ShardProgress(group, N, S).done == {0, 1}
    with pytest.raises(ArrayCorruptError, match="shard 2 is missing"):
        verify_image_array(group, N)
    assert _generate(group, data, strengths) == [2]  # only the remaining shard is redone
    assert ShardProgress(group, N, S).complete()
    verify_image_array(group, N)
    arr = open_image_array(group)
    assert n_shards(arr) == 3 and arr.shape[0] == N
    np.testing.assert_array_equal(arr[:], data)
    np.testing.assert_array_equal(open_image_array(group, "strength")[:], strengths)
    shard_files = sorted(os.listdir(group / "images" / "c"))
    assert shard_files == ["0", "1", "2"]  # one object per shard, not per image


def test_scalar_array_defaults_to_nan(tmp_path):
    arr = create_scalar_array(tmp_path / "g.zarr", N, block=S)
    assert arr.dtype == np.float32 and arr.chunks == (S,) and np.isnan(arr[:]).all()


def test_write_shard_checks_shape_and_dtype(tmp_path):
    arr = create_image_array(tmp_path / "g.zarr", N, H, W, shard_images=S)
    with pytest.raises(ValueError, match="shard 0 needs shape"):
        write_shard(arr, 0, np.zeros((3, H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="shard 2 needs shape"):
        write_shard(arr, 2, np.zeros((S, H, W, 3), np.uint8))  # the last shard holds 2
    with pytest.raises(ValueError, match="uint8"):
        write_shard(arr, 0, np.zeros((S, H, W, 3), np.float32))
    with pytest.raises(IndexError):
        write_shard(arr, 3, np.zeros((S, H, W, 3), np.uint8))


def test_reopen_with_other_layout_is_refused(tmp_path):
    group = tmp_path / "g.zarr"
    create_image_array(group, N, H, W, shard_images=S)
    with pytest.raises(ValueError, match="exists with shape"):
        create_image_array(group, N, H, W, shard_images=S + 1)
    ShardProgress(group, N, S).mark(0)
    with pytest.raises(ValueError, match="shard_images"):
        ShardProgress(group, N, S + 1)


def test_truncated_shard_is_detected_and_named(tmp_path):
    group = tmp_path / "sia.zarr"
    _generate(group, _images(), np.zeros(N, np.float32))
    shard = group / "images" / "c" / "1" / "0" / "0" / "0"
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    with pytest.raises(ArrayCorruptError, match="shard 1") as info:
        verify_image_array(group, N)
    assert str(shard) in str(info.value)


def test_wrong_count_and_missing_array_are_reported(tmp_path):
    group = tmp_path / "sia.zarr"
    _generate(group, _images(), np.zeros(N, np.float32))
    with pytest.raises(ArrayCorruptError, match=r"expected \(11"):
        verify_image_array(group, N + 1)
    with pytest.raises(ArrayCorruptError, match="cannot open"):
        verify_image_array(tmp_path / "none.zarr", N)


def test_group_attrs_round_trip(tmp_path):
    group = tmp_path / "g.zarr"
    create_image_array(group, N, H, W, shard_images=S)
    write_attrs(group, {"config": {"steps": 20}, "upstream": ("k1",)})
    write_attrs(group, {"seed": 0})
    assert read_attrs(group) == {"config": {"steps": 20}, "upstream": ["k1"], "seed": 0}


def test_read_rows_returns_the_requested_images_in_the_requested_order(tmp_path):
    data = _images(3)
    arr = create_image_array(tmp_path / "g.zarr", N, H, W, shard_images=S)
    for shard in range(n_shards(arr)):
        write_shard(arr, shard, data[shard * S: (shard + 1) * S])
    rows = np.array([9, 0, 4, 4, 7])  # across shards, unsorted, repeated
    np.testing.assert_array_equal(read_rows(open_image_array(tmp_path / "g.zarr"), rows), data[rows])
    assert read_rows(arr, np.array([], dtype=int)).shape == (0, H, W, 3)
