"""Device slots: each GPU-bound task holds one device for its whole run.

N visible GPUs give N slots, so N category tasks run at once; a CPU-only machine has one slot
and runs them one at a time. Under Ray, Ray itself hands out GPUs (``num_gpus=1`` per task) and
each worker sees exactly one device, so the pool there is a single ``cuda`` slot.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator


def visible_devices(gpus: int | None = None) -> list[str]:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus is not None:
        count = min(count, gpus)
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


class DevicePool:
    """A thread-safe pool of device names; ``acquire`` blocks until one is free."""

    def __init__(self, devices: list[str]):
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self._free: queue.Queue[str] = queue.Queue()
        for d in self.devices:
            self._free.put(d)
        self._lock = threading.Lock()
        self.in_use: set[str] = set()
        self.peak = 0

    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[str]:
        try:
            device = self._free.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no free device among {self.devices} after {timeout} s") from None
        with self._lock:
            self.in_use.add(device)
            self.peak = max(self.peak, len(self.in_use))
        try:
            yield device
        finally:
            with self._lock:
                self.in_use.discard(device)
            self._free.put(device)


_POOLS: dict[tuple[str, ...], DevicePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(devices: list[str]) -> DevicePool:
    """One pool per device set in this process, shared by all flow runs in it."""
    key = tuple(devices)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = DevicePool(devices)
        return _POOLS[key]
