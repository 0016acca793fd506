"""Device slots: each GPU-bound task holds one device for its whole run.

N visible GPUs give N slots, so N category tasks run at once; a CPU-only machine has one slot
and runs them one at a time. Under Ray, Ray itself hands out GPUs (``num_gpus=1`` per task) and
each worker sees exactly one device, so the pool there is a single ``cuda`` slot.

Each slot also owns one long-lived compute thread, and ``DevicePool.run`` executes the stage there
rather than on the Prefect task's own thread. Every thread that calls into torch gets its own
OpenMP team, and once a process holds more OpenMP threads than cores, libgomp stops spinning and
every small op pays a futex wake-up: train_realnet ran 2x slower as the fourth task thread of a
flow than in-process (BENCHMARKS.md, "Training under Prefect"). One thread per slot keeps one team.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def visible_devices(gpus: int | None = None, device: str = "auto") -> list[str]:
    """The device slots of ``runtime.device`` and ``runtime.gpus``: every visible GPU for ``auto`` (the
    CPU when there is none), only the CPU for ``cpu``, and for ``cuda`` or ``cuda:N`` those GPUs or an error.
    """
    import torch

    from realnet_core.runtime import parse_device

    kind, index = parse_device(device)
    if kind == "cpu":
        return ["cpu"]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind != "auto" and count == 0:
        raise RuntimeError(f"runtime.device={device!r} but no CUDA device is visible (runtime.device=auto "
                           "uses the CPU then)")
    if index is not None:
        if index >= count:
            raise RuntimeError(f"runtime.device={device!r} but only {count} CUDA device(s) are visible")
        return [device]
    if gpus is not None:
        count = min(count, gpus)
    return [f"cuda:{i}" for i in range(count)] or ["cpu"]


class ComputeThread:
    """One daemon thread that runs the jobs handed to it, one after another.

    A daemon, so that Ctrl-C or a failed flow does not wait for a running stage at exit: the store
    only records an artifact once it is complete, so a stage cut short loses nothing.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], Future]] = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who re-raises it
                future.set_exception(exc)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on this thread; blocks until it returns, and raises what it raised."""
        if threading.current_thread() is self.thread:
            return fn()  # a job that runs another job: waiting on ourselves would deadlock
        future: Future = Future()
        self._jobs.put((fn, future))
        return future.result()


# ---------------------------------------------------------------- machine-wide device locks


def device_lock_dir() -> Path:
    """Where GPU lock files live: one folder per machine that every realnet process sees."""
    return Path(os.environ.get("REALNET_DEVICE_LOCK_DIR") or Path(tempfile.gettempdir()) / "realnet-devices")


def gpu_identity(device: str) -> str | None:
    """A name for the physical GPU behind ``device`` that every process agrees on; None for a CPU.

    ``cuda:0`` means different GPUs under different CUDA_VISIBLE_DEVICES, the UUID does not.
    """
    if not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    try:
        return f"gpu-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:  # no UUID from this driver: the index is the best there is
        return f"gpu-{index}"


# ---------------------------------------------------------------- the pool


class DevicePool:
    """A thread-safe pool of device names; ``acquire`` blocks until one is free.

    In-process slots alone would let two served flow runs (two processes) train on one GPU at once,
    so a GPU is also taken through a lock file in :func:`device_lock_dir`, named by ``identity``.
    A SIGKILLed holder's lock is broken at once (storage.locks), so a crash never strands a GPU.
    """

    def __init__(self, devices: list[str], identity: Callable[[str], str | None] = gpu_identity,
                 lock_dir: Path | None = None, poll: float = 0.5):
        if not devices:
            raise ValueError("a device pool needs at least one device")
        self.devices = list(devices)
        self._identity, self._lock_dir, self._poll = identity, lock_dir, poll
        self._threads: dict[str, ComputeThread] = {}
        self._free: queue.Queue[str] = queue.Queue()
        for d in self.devices:
            self._free.put(d)
        self._lock = threading.Lock()
        self.in_use: set[str] = set()
        self.peak = 0

    def _machine_lock(self, device: str) -> contextlib.AbstractContextManager | None:
        """The held machine-wide lock of ``device``, or None when another process holds it."""
        name = self._identity(device)
        if name is None:
            return contextlib.nullcontext()
        from fsspec.implementations.local import LocalFileSystem

        from storage.errors import LockTimeout
        from storage.locks import FileLock, hold_lock

        folder = self._lock_dir or device_lock_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"{name}.lock")
        held = hold_lock(FileLock(LocalFileSystem(), True, path, path), timeout=0)
        try:
            held.__enter__()
        except LockTimeout:
            return None
        return held

    def _take(self, deadline: float | None) -> tuple[str, contextlib.AbstractContextManager]:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                device = self._free.get(timeout=left)
            except queue.Empty:
                raise TimeoutError(f"no free device among {self.devices} after waiting") from None
            held = self._machine_lock(device)
            if held is not None:
                return device, held
            self._free.put(device)  # busy in another process: let threads here try the others
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"no free device among {self.devices}: held by other processes "
                                   f"(lock files in {self._lock_dir or device_lock_dir()})")
            time.sleep(self._poll)

    @contextlib.contextmanager
    def acquire(self, timeout: float | None = None) -> Iterator[str]:
        device, held = self._take(None if timeout is None else time.monotonic() + timeout)
        with self._lock:
            self.in_use.add(device)
            self.peak = max(self.peak, len(self.in_use))
        try:
            yield device
        finally:
            with self._lock:
                self.in_use.discard(device)
            held.__exit__(None, None, None)
            self._free.put(device)

    def run(self, fn: Callable[[str], T], timeout: float | None = None) -> T:
        """Hold a free device and run ``fn(device)`` on that device's compute thread."""
        with self.acquire(timeout) as device:
            with self._lock:
                worker = self._threads.get(device)
                if worker is None:
                    worker = self._threads[device] = ComputeThread(f"compute-{device}")
            return worker.run(lambda: fn(device))


_POOLS: dict[tuple[str, ...], DevicePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(devices: list[str]) -> DevicePool:
    """One pool per device set in this process, shared by all flow runs in it."""
    key = tuple(devices)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = DevicePool(devices)
        return _POOLS[key]
