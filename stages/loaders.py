"""Background data loading for train_realnet and evaluate: DataLoader workers and pinned memory.

Reading SIA images from Zarr (or textures from disk) and decoding test images are host work; done
on the compute thread, the GPU waits for it every step. With ``runtime.loader_workers`` > 0 it
happens in that many worker processes, a few batches ahead, into pinned memory that copies to the
GPU without blocking. 0 keeps everything on the compute thread and starts no workers (each costs
seconds of start-up: a fresh Python importing torch), the better choice on a small CPU.

What a training step sees never depends on the worker count or on where a run resumed: step t
draws its anomaly-source images from a seed of (stage seed, t) alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from realnet_core.data.images import load_batch
from realnet_core.runtime import seed_generator, to_device

PREFETCH_BATCHES = 4  # per worker


class SourceSteps(Dataset):
    """Item t: the ``n`` anomaly-source images (n, 3, size, size) of training step t."""

    def __init__(self, source: object, n: int, size: int, seed: tuple) -> None:
        self.source, self.n, self.size, self.seed = source, n, size, seed

    def __getitem__(self, step: int) -> torch.Tensor:
        gen = seed_generator(*self.seed, f"step{step}")
        return self.source.sample(self.n, gen, self.size)


class TestBatches(Dataset):
    """Item i: the i-th batch of test images, decoded and resized: uint8 (b, size, size, 3).

    uint8, so that a quarter of the bytes cross to the GPU; ``to_tensor`` converts them there.
    """

    __test__ = False  # a dataset, not a pytest class, despite the name

    def __init__(self, paths: Sequence[str], batch_size: int, size: int) -> None:
        self.paths, self.batch_size, self.size = list(paths), batch_size, size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_batch(self.paths[i * self.batch_size: (i + 1) * self.batch_size], self.size))


def prefetch(dataset: Dataset, indices: Sequence[int], device: torch.device, workers: int) -> Iterator[torch.Tensor]:
    """``dataset[i]`` for each index in order, on ``device``, loaded ``workers`` processes ahead."""
    if workers <= 0:  # no loader machinery at all: the plain loop, on this thread
        for i in indices:
            yield to_device(dataset[i], device)
        return
    loader = DataLoader(
        dataset, batch_size=None, sampler=indices, num_workers=workers, prefetch_factor=PREFETCH_BATCHES,
        pin_memory=device.type == "cuda",
        # spawn, not fork: the parent has CUDA and Prefect's threads, which a forked child inherits half-made.
        multiprocessing_context="spawn",
    )
    for batch in loader:
        yield batch.to(device, non_blocking=True)
