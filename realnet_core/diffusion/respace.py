"""Timestep respacing: run a diffusion trained on T steps with a subset of them.

A kept subset t_0 < t_1 < ... defines a new process whose betas are 1 - abar[t_i] / abar[t_{i-1}],
so its cumulative alphas equal the original ones at the kept steps. The network is still fed the
original timestep values (``timestep_map``), which is what it was trained on.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from realnet_core.runtime import to_device

from .gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule


def space_timesteps(num_timesteps: int, spec: str | int | Iterable[int] | None) -> set[int]:
    """Steps to keep from the original process.

    ``spec`` is "ddimN" (stride chosen so that range(0, T, stride) has exactly N steps, e.g.
    ddim20 -> 0, 50, ..., 950), a comma list "10,15,20" (that many evenly spaced steps taken from
    each of equal-size sections, both ends included), an int N (same as "N"), or an explicit
    iterable of steps. "" / None keeps all steps.
    """
    if spec is None or spec == "":
        return set(range(num_timesteps))
    if isinstance(spec, int):
        spec = str(spec)
    if not isinstance(spec, str):
        steps = {int(s) for s in spec}
        if not steps or min(steps) < 0 or max(steps) >= num_timesteps:
            raise ValueError(f"timesteps must lie in [0, {num_timesteps})")
        return steps
    if spec.startswith("ddim"):
        desired = int(spec[len("ddim"):])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired:
                return set(range(0, num_timesteps, stride))
        raise ValueError(f"cannot make exactly {desired} steps from {num_timesteps} with an integer stride")
    counts = [int(c) for c in spec.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"cannot take {count} steps from a section of {size}")
        stride = 1.0 if count <= 1 else (size - 1) / (count - 1)
        # Accumulate the float stride and use Python's round() (banker's), as upstream does,
        # so that ties land on the same steps.
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return set(steps)


class SpacedDiffusion(GaussianDiffusion):
    """GaussianDiffusion over ``use_timesteps`` of a base schedule ``base_betas``."""

    def __init__(self, use_timesteps: Iterable[int], base_betas: np.ndarray, **kwargs):
        base_betas = np.asarray(base_betas, dtype=np.float64)
        self.use_timesteps = set(int(t) for t in use_timesteps)
        self.original_num_steps = len(base_betas)
        base_ac = np.cumprod(1.0 - base_betas)
        kept = sorted(self.use_timesteps)
        if not kept or kept[0] < 0 or kept[-1] >= len(base_betas):
            raise ValueError(f"use_timesteps must be a non-empty subset of [0, {len(base_betas)})")
        last, new_betas = 1.0, []
        for i in kept:
            new_betas.append(1.0 - base_ac[i] / last)
            last = base_ac[i]
        super().__init__(np.array(new_betas, dtype=np.float64), **kwargs)
        self.timestep_map = np.array(kept, dtype=np.int64)
        self._map_cache: dict[torch.device, torch.Tensor] = {}

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        table = self._map_cache.get(t.device)
        if table is None:
            table = self._map_cache[t.device] = to_device(torch.from_numpy(self.timestep_map), t.device)
        return table[t].to(t.dtype)


def create_diffusion(
    steps: int = 1000, noise_schedule: str = "linear", timestep_respacing: str | int | None = "",
    learn_sigma: bool = True,
) -> SpacedDiffusion:
    """Upstream's create_gaussian_diffusion for the RealNet settings (always a SpacedDiffusion)."""
    betas = get_named_beta_schedule(noise_schedule, steps)
    return SpacedDiffusion(space_timesteps(steps, timestep_respacing), betas, learn_sigma=learn_sigma)

