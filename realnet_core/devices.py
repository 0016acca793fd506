"""Host tensors onto the compute device without stalling the host; autocast switched off for one op."""

from __future__ import annotations

import contextlib

import torch


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
