"""Device, precision, compile and seeding helpers that every stage, the predictor and the bench share.

The one parser of a device string (``parse_device``), bf16 autocast, inference mode, ``torch.compile``,
seeds derived from names, host-to-device copies that do not stall, and the CPU thread count.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from realnet_core.config import Config


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


DEVICE_NAMES = "auto, cpu, cuda or cuda:N"


def parse_device(name: str) -> tuple[str, int | None]:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` -> (kind, index); ValueError for anything else.

    The one place a device string is read: the config, the stages and the device slots all ask it.
    """
    m = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", str(name))
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ValueError(f"unknown device {name!r}: use {DEVICE_NAMES}")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def resolve_device(name: str = "auto") -> torch.device:
    kind, _ = parse_device(name)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device={name!r} but no CUDA device is visible")
    return device


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU only: on CPU it is slower than float32 and changes results."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode, and no weight asks for a gradient (gradients with respect to inputs still flow).

    Autocast keeps a bf16 copy of every float32 weight that requires grad until its region ends, under
    ``torch.no_grad()`` too: one batch-1 call of the paper-size RealNet held 1 GB of copies on top of its
    2.2 GB of weights (BENCHMARKS.md, the memory model).
    """
    return module.eval().requires_grad_(False)


def accelerate(module: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The module to call in a hot loop: compiled when ``runtime.compile`` is set, else itself.

    On a GPU it also goes channels_last, which pays only together with compile: alone it made SDAS
    slower on an H100 (eager GroupNorm in NHWC), compiled it doubled it (BENCHMARKS.md). The returned
    module shares the parameters: train, save and load through the original.
    """
    # Process-wide, so set at every call: stages of one run share the runtime config.
    torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    if not cfg.runtime.compile:
        return module
    import torch._dynamo as dynamo

    # An optimisation must never fail a stage: what the compiler cannot handle runs eagerly instead.
    dynamo.config.suppress_errors = True
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return torch.compile(module, mode=cfg.runtime.compile_mode)


def adam(params, lr: float, device: torch.device, **kwargs) -> torch.optim.Optimizer:
    """Adam as one fused kernel a step, where torch has one for the device: a loop over hundreds of small
    tensors was a tenth of a CPU-profile training step."""
    return torch.optim.Adam(params, lr=lr, fused=device.type in ("cpu", "cuda"), **kwargs)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from a base seed and names, so categories and stages draw independent streams."""
    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_generator(seed: int, *parts: str, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


@contextlib.contextmanager
def seeded_init(seed: int, *parts: str) -> Iterator[None]:
    """Seed torch's global RNG, which layer initialisers draw from, and restore it afterwards.

    Without it, two builds of the same artifact key start from different random weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *parts))
        yield
