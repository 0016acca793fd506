"""Host tensors onto the compute device without stalling the host; autocast switched off for one op;
the CPU thread count."""

from __future__ import annotations

import contextlib
import os

import torch


def cpu_threads(setting: int | str = "auto") -> int:
    """Intra-op threads for ``runtime.threads``: ``auto`` is every core this process may run on.

    Fixed by the machine, never by its load: the thread count decides how float sums are split, so
    a count that followed the load would make a run's numbers depend on how busy the machine was.
    """
    if setting != "auto":
        return int(setting)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def set_cpu_threads(setting: int | str = "auto") -> int:
    """Apply ``runtime.threads`` to the calling thread (OpenMP's count is per thread); returns the count."""
    n = cpu_threads(setting)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; from the host to a GPU through pinned memory, without blocking.

    A plain copy from pageable memory waits for the GPU's queued work, so the host could not prepare
    the next step (draw noise, gather a batch) while the GPU computes this one. PyTorch keeps the
    pinned block alive until the copy is done.
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off on ``device_type``, for ops whose precision the caller chooses itself."""
    # The meta device (the roofline model) has no autocast to turn off.
    if device_type in ("cuda", "cpu"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
