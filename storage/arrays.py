"""Zarr v3 image arrays: uint8 (N, H, W, 3), one image per chunk, a few hundred images per shard.

Blosc-zstd with bitshuffle suits uint8 images. Shards are written whole by one writer, and a small
progress file records which shards are complete, so a killed generation resumes from the last
complete shard instead of from zero. `verify_image_array` reads everything back before an array
is published, because Zarr silently returns zeros for a shard file that is missing.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from fsspec.core import url_to_fs
from zarr.codecs import BloscCodec, BytesCodec

from .keys import to_jsonable
from .space import writing


class ArrayCorruptError(ValueError):
    """An image array is truncated, missing shards, or does not decode; the message names where."""


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=1)


def _existing(path: str | os.PathLike, name: str) -> zarr.Array | None:
    try:
        return zarr.open_array(store=str(path), path=name, mode="r+")
    except FileNotFoundError:  # zarr's ArrayNotFoundError derives from it
        return None


def create_image_array(
    path: str | os.PathLike,
    n: int,
    height: int,
    width: int,
    *,
    shard_images: int = 256,
    name: str = "images",
    attrs: dict[str, Any] | None = None,
) -> zarr.Array:
    """Create (or reopen, to resume) array `name` in the Zarr group at `path`.

    An existing array with the same shape and shard size is returned as is, so a resumed
    generation keeps its finished shards; one with other settings raises ValueError.
    """
    if n < 1 or height < 1 or width < 1 or shard_images < 1:
        raise ValueError(f"bad image array size n={n} h={height} w={width} shard_images={shard_images}")
    shape, shards = (n, height, width, 3), (shard_images, height, width, 3)
    group = zarr.open_group(str(path), mode="a")
    old = _existing(path, name)
    if old is not None:
        if old.shape != shape or old.shards != shards or old.dtype != np.uint8:
            raise ValueError(
                f"{path}/{name} exists with shape {old.shape}, shards {old.shards}, dtype {old.dtype}; "
                f"wanted shape {shape}, shards {shards}, uint8"
            )
        return old
    arr = group.create_array(
        name,
        shape=shape,
        dtype="uint8",
        chunks=(1, height, width, 3),
        shards=shards,
        serializer=BytesCodec(),
        compressors=_compressor(),
        fill_value=0,
        dimension_names=("image", "y", "x", "channel"),
    )
    if attrs:
        arr.attrs.update(to_jsonable(attrs))
    return arr


def create_scalar_array(
    path: str | os.PathLike,
    n: int,
    *,
    name: str = "strength",
    block: int = 256,
    fill_value: float = float("nan"),
) -> zarr.Array:
    """A 1-D float32 array of per-image values (e.g. the SDAS strength s) in the same group.

    Its chunks match the image shards (`block`), so the writer of image shard i also writes
    chunk i, and no two writers ever touch the same object. NaN marks "not written yet".
    """
    group = zarr.open_group(str(path), mode="a")
    old = _existing(path, name)
    if old is not None:
        if old.shape != (n,) or old.chunks != (block,):
            raise ValueError(f"{path}/{name} exists with shape {old.shape}, chunks {old.chunks}")
        return old
    return group.create_array(
        name, shape=(n,), dtype="float32", chunks=(block,), compressors=_compressor(), fill_value=fill_value
    )


def open_image_array(path: str | os.PathLike, name: str = "images", mode: str = "r") -> zarr.Array:
    """Open array `name` of the group at `path` (a local path or fsspec URL)."""
    return zarr.open_array(store=str(path), path=name, mode=mode)


def _block(array: zarr.Array) -> int:
    return (array.shards or array.chunks)[0]


def n_shards(array: zarr.Array) -> int:
    """Number of write units (shards, or chunks for unsharded arrays) along the first axis."""
    return math.ceil(array.shape[0] / _block(array))


def shard_range(array: zarr.Array, shard_index: int) -> tuple[int, int]:
    """[start, stop) of the rows held by shard `shard_index`."""
    if not 0 <= shard_index < n_shards(array):
        raise IndexError(f"shard {shard_index} out of range 0..{n_shards(array) - 1}")
    start = shard_index * _block(array)
    return start, min(start + _block(array), array.shape[0])


def _where(array: zarr.Array, shard_index: int) -> str:
    """The shard's folder on a local store (where free space is measured), else the array's name."""
    root = getattr(array.store, "root", None)
    base = f"{root}/{array.path}" if root is not None else str(array.path)
    return f"{base}/c/{shard_index}" if root is not None else f"{base} shard {shard_index}"


def write_shard(array: zarr.Array, shard_index: int, values: np.ndarray) -> None:
    """Write one whole shard (images, or the matching block of a scalar array) in a single call."""
    start, stop = shard_range(array, shard_index)
    values = np.asarray(values)
    expected = (stop - start, *array.shape[1:])
    if values.shape != expected:
        raise ValueError(f"shard {shard_index} needs shape {expected}, got {values.shape}")
    if array.dtype == np.uint8 and values.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {values.dtype}")  # silent casts would wrap values
    with writing(_where(array, shard_index), values.nbytes):
        array[start:stop] = values


class ShardProgress:
    """Completed shard indices in `<group>/<name>.progress.json`, rewritten atomically after each shard.

    A shard is marked only after it is fully written, so a crash mid-shard just redoes that shard.
    The file also records n and the shard size, so progress from a different layout is never reused.
    """

    def __init__(self, group_path: str | os.PathLike, n: int, shard_images: int, name: str = "images"):
        self.path = Path(group_path) / f"{name}.progress.json"
        self.n, self.shard_images = n, shard_images
        self.total = math.ceil(n / shard_images)
        self._done: set[int] = set()
        if self.path.exists():
            state = json.loads(self.path.read_text())
            if (state.get("n"), state.get("shard_images")) != (n, shard_images):
                raise ValueError(
                    f"{self.path} records n={state.get('n')}, shard_images={state.get('shard_images')}; "
                    f"this run has n={n}, shard_images={shard_images}"
                )
            self._done = set(state["done"])

    @property
    def done(self) -> set[int]:
        return set(self._done)

    def pending(self) -> list[int]:
        return [i for i in range(self.total) if i not in self._done]

    def complete(self) -> bool:
        return not self.pending()

    def mark(self, shard_index: int) -> None:
        if not 0 <= shard_index < self.total:
            raise IndexError(f"shard {shard_index} out of range 0..{self.total - 1}")
        self._done.add(shard_index)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        state = {"n": self.n, "shard_images": self.shard_images, "done": sorted(self._done)}
        with writing(self.path, 64 + 8 * len(self._done)), open(tmp, "w") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def verify_image_array(path: str | os.PathLike, expected_n: int, name: str = "images") -> None:
    """Raise ArrayCorruptError (naming the path and shard) unless every shard exists and decodes."""
    where = f"{path}/{name}"
    try:
        array = open_image_array(path, name)
    except Exception as e:
        raise ArrayCorruptError(f"cannot open image array {where}: {e}") from e
    if array.shape[0] != expected_n or array.ndim != 4 or array.shape[3] != 3:
        raise ArrayCorruptError(f"{where} has shape {array.shape}, expected ({expected_n}, H, W, 3)")
    fs, root = url_to_fs(str(path))
    for i in range(n_shards(array)):
        key = array.metadata.encode_chunk_key((i, 0, 0, 0))
        shard_file = f"{root.rstrip('/')}/{name}/{key}"
        # Zarr reads a missing shard as zeros, so absence must be checked explicitly.
        if not fs.exists(shard_file):
            raise ArrayCorruptError(f"{where}: shard {i} is missing ({shard_file})")
        start, stop = shard_range(array, i)
        try:
            array[start:stop]
        except Exception as e:
            raise ArrayCorruptError(f"{where}: shard {i} ({shard_file}) is corrupt or truncated: {e}") from e


def write_attrs(path: str | os.PathLike, attrs: dict[str, Any]) -> None:
    """Merge provenance attributes (config, upstream keys, seeds...) into the group's attrs."""
    zarr.open_group(str(path), mode="a").attrs.update(to_jsonable(attrs))


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def write_float_maps(path: str | os.PathLike, maps: np.ndarray, name: str = "maps") -> zarr.Array:
    """Anomaly maps (N, H, W) as float16, one map per chunk, for browsing with zarr or xarray."""
    group = zarr.open_group(str(path), mode="a")
    arr = group.create_array(name, shape=maps.shape, dtype="float16", chunks=(1, *maps.shape[1:]),
                             compressors=_compressor(), overwrite=True)
    with writing(f"{path}/{name}", maps.size * 2):
        arr[:] = maps.astype(np.float16)
    return arr


def read_rows(array: zarr.Array, indices: np.ndarray) -> np.ndarray:
    """Rows ``indices`` of an image array, read as concurrent single-chunk reads.

    zarr 3.1's orthogonal selection decodes every chunk of each shard it touches: a batch of 16 random
    images out of two 256-image shards took 231 ms on the 2-core CPU, and 39.5 ms with these reads
    (``realnet bench --profile paper --part loading``; BENCHMARKS.md).
    """
    from zarr.core.sync import sync  # the event loop zarr's own synchronous API runs on

    rows = [int(i) for i in np.asarray(indices).reshape(-1)]
    if not rows:
        return np.empty((0, *array.shape[1:]), dtype=array.dtype)
    source = array.async_array

    async def gather() -> list:
        return await asyncio.gather(*(source.getitem((slice(i, i + 1),)) for i in rows))

    return np.concatenate([np.asarray(part) for part in sync(gather())])
