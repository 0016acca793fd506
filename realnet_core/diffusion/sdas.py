"""Strength-controllable Diffusion Anomaly Synthesis (RealNet, Algorithm 1 and Algorithm S1).

SDAS samples the reverse process with the per-step variance inflated to (1 + s) Sigma_theta, which
walks the sample into low-density regions next to the normal data: s = 0 gives normal images,
s in [0.1, 0.2] gives the paper's anomalies. The DDIM variant adds N(0, s Sigma) to the
deterministic DDIM update. Sampling runs on one device; with ``autocast_dtype`` only the network
runs under autocast, the diffusion maths stays float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from realnet_core.runtime import to_device

from .gaussian_diffusion import GaussianDiffusion, ModelFn, randn_like

# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _default_device(model: ModelFn) -> torch.device:
    params = getattr(model, "parameters", None)
    if params is not None:
        for p in params():
            return p.device
    return torch.device("cpu")


def _autocast(fn: ModelFn | None, device: torch.device, dtype: torch.dtype | None) -> ModelFn | None:
    """Run ``fn`` under autocast and hand back float32, so the schedule maths is not bf16."""
    if fn is None or dtype is None:
        return fn

    def wrapped(x: torch.Tensor, t: torch.Tensor, **kw) -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=dtype):
            out = fn(x, t, **kw)
        return out.float()

    return wrapped


def _strength_tensor(strength: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    # Checked on the host before it moves: checking a GPU tensor would wait for the GPU's queue.
    s = torch.as_tensor(strength, dtype=torch.float32)
    if s.ndim == 0:
        s = s.expand(batch)
    if s.shape != (batch,):
        raise ValueError(f"strength must be a float or a tensor of shape ({batch},), got {tuple(s.shape)}")
    if bool((s < 0).any()):
        raise ValueError("anomaly strength s must be >= 0")
    return to_device(s.contiguous(), device)


# ----------------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------------


def sample_loop(
    model: ModelFn,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    strength: float | torch.Tensor = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    model_kwargs: dict | None = None,
    cond_fn: ModelFn | None = None,
    clip_denoised: bool = True,
    ddim: bool = False,
    ddim_variance: str = "model",
    autocast_dtype: torch.dtype | None = None,
    noise: torch.Tensor | None = None,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Iterator[dict]:
    """Yield dict(t, sample, pred_xstart) after each reverse step, from t = T-1 down to t = 0.

    ``noise`` optionally fixes x_T; all later noise comes from ``generator`` (drawn on the
    generator's device, then moved, so a CPU generator reproduces the same images on any device).
    """
    device = torch.device(device) if device is not None else _default_device(model)
    shape = tuple(shape)
    s = _strength_tensor(strength, shape[0], device)
    model_fn = _autocast(model, device, autocast_dtype)
    cond = _autocast(cond_fn, device, autocast_dtype)
    kwargs = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in (model_kwargs or {}).items()}

    template = torch.empty(shape, dtype=torch.float32, device=device)
    x = noise.to(device=device, dtype=torch.float32) if noise is not None else randn_like(template, generator)
    for i in reversed(range(diffusion.num_timesteps)):
        t = torch.full((shape[0],), i, dtype=torch.long, device=device)
        step_noise = randn_like(x, generator)
        with torch.no_grad():
            if ddim:
                out = diffusion.ddim_sample_step(
                    model_fn, x, t, s, step_noise, variance=ddim_variance, clip_denoised=clip_denoised,
                    cond_fn=cond, model_kwargs=kwargs, denoised_fn=denoised_fn,
                )
            else:
                out = diffusion.p_sample_step(
                    model_fn, x, t, s, step_noise, clip_denoised=clip_denoised, cond_fn=cond,
                    model_kwargs=kwargs, denoised_fn=denoised_fn,
                )
        x = out["sample"]
        yield {"t": i, "sample": x, "pred_xstart": out["pred_xstart"]}


def sdas_sample(
    model: ModelFn,
    diffusion: GaussianDiffusion,
    shape: Sequence[int],
    strength: float | torch.Tensor = 0.0,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    model_kwargs: dict | None = None,
    cond_fn: ModelFn | None = None,
    clip_denoised: bool = True,
    ddim: bool = False,
    ddim_variance: str = "model",
    autocast_dtype: torch.dtype | None = None,
    noise: torch.Tensor | None = None,
    progress: bool = False,
    callback: Callable[[dict], None] | None = None,
    denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Generate a batch with SDAS; returns float32 images in [-1, 1] of ``shape``.

    ``strength`` is s (a float, or one value per image). ``callback`` receives each step's dict.
    Pass a SpacedDiffusion (e.g. "ddim20", the paper's 20 steps) to sample with fewer steps.
    """
    steps: Iterator[dict] = sample_loop(
        model, diffusion, shape, strength, generator=generator, device=device, model_kwargs=model_kwargs,
        cond_fn=cond_fn, clip_denoised=clip_denoised, ddim=ddim, ddim_variance=ddim_variance,
        autocast_dtype=autocast_dtype, noise=noise, denoised_fn=denoised_fn,
    )
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, total=diffusion.num_timesteps, desc="SDAS", leave=False)
    sample = None
    for out in steps:
        if callback is not None:
            callback(out)
        sample = out["sample"]
    assert sample is not None
    # Only unclipped sampling can leave [-1, 1]; clamp so callers can rely on the range.
    return sample.clamp(-1, 1)
