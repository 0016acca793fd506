"""Build, load and sample the SDAS diffusion model from the stage config (shared by stages 1 and 2)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from realnet_core.config import DiffusionConfig
from realnet_core.diffusion.gaussian_diffusion import get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, space_timesteps
from realnet_core.diffusion.sdas import sdas_sample
from realnet_core.diffusion.unet import create_unet, load_pretrained
from realnet_core.runtime import autocast, for_inference, to_device
from storage.checkpoints import CheckpointError, load_checkpoint


def unet_flags(cfg: DiffusionConfig, num_classes: int | None = None) -> dict[str, Any]:
    """Everything needed to rebuild the UNet; stored beside the weights."""
    return {
        "image_size": cfg.image_size,
        "num_channels": cfg.num_channels,
        "num_res_blocks": cfg.num_res_blocks,
        "channel_mult": tuple(cfg.channel_mult) if cfg.channel_mult else None,
        "attention_resolutions": ",".join(str(r) for r in cfg.attention_resolutions),
        "num_head_channels": cfg.num_head_channels,
        "learn_sigma": True,
        "num_classes": num_classes,
    }


PRIOR_KEYS = ("center", "x0_range")  # sampling data beside the UNet flags, not UNet arguments


def build_unet(flags: dict[str, Any]) -> torch.nn.Module:
    return create_unet(**{k: v for k, v in flags.items() if k not in PRIOR_KEYS})


def load_init(model: torch.nn.Module, path: str) -> None:
    """Start from a released guided-diffusion checkpoint (strict; only label_emb may be re-initialised)."""
    state = load_checkpoint(path)
    state = state.get("ema", state.get("state_dict", state)) if isinstance(state, dict) else state
    try:
        load_pretrained(model, state)
    except (ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: does not fit the configured UNet: {exc}") from None


def load_ema(path: str, device: torch.device) -> tuple[torch.nn.Module, dict[str, Any], list[str]]:
    ckpt = load_checkpoint(path)
    flags = {**ckpt["flags"], "center": list(ckpt.get("center", [0.0, 0.0, 0.0])), "x0_range": ckpt.get("x0_range")}
    model = build_unet(flags)
    try:
        model.load_state_dict(ckpt["ema"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the stored UNet flags: {exc}") from None
    return for_inference(model.to(device)), flags, list(ckpt.get("categories", []))


def spaced(cfg: DiffusionConfig, steps: int) -> SpacedDiffusion:
    # "ddimN" gives t = 0, T/N, 2T/N, ...: the paper's 20 steps are t = 0, 50, ..., 950.
    spec = f"ddim{steps}" if cfg.diffusion_steps % steps == 0 else str(steps)
    betas = get_named_beta_schedule(cfg.noise_schedule, cfg.diffusion_steps)
    return SpacedDiffusion(space_timesteps(cfg.diffusion_steps, spec), betas)


def _colour_clip(x0_range: list[list[float]] | None, mean_range: list[list[float]] | None, device: torch.device):
    """The colour prior's ``denoised_fn``: each predicted x0 inside the training set's per-channel range and,
    with ``mean_range``, its mean colour inside the range of the training images' mean colours.

    A model trained for minutes predicts x0 badly at high noise, where 1/sqrt(alpha_bar) magnifies its
    error: the first steps then fix a saturated global colour (yellow or blue moon rock) that later
    steps keep. Bounding the mean keeps every local change, anomalous colours included.
    """
    if x0_range is None:
        return None
    lo, hi = (to_device(torch.tensor(v), device).view(1, 3, 1, 1) for v in x0_range)
    if mean_range is None:
        return lambda x0: torch.maximum(torch.minimum(x0, hi), lo)
    mlo, mhi = (to_device(torch.tensor(v), device).view(1, 3, 1, 1) for v in mean_range)

    def clip(x0: torch.Tensor) -> torch.Tensor:
        x0 = torch.maximum(torch.minimum(x0, hi), lo)
        m = x0.mean(dim=(2, 3), keepdim=True)
        return torch.maximum(torch.minimum(x0 + (torch.maximum(torch.minimum(m, mhi), mlo) - m), hi), lo)

    return clip


@torch.no_grad()
def sample_images(model: torch.nn.Module, flags: dict[str, Any], cfg: DiffusionConfig, n: int,
                  strength: float | torch.Tensor, generator: torch.Generator, device: torch.device, *,
                  steps: int | None = None, class_index: int | list[int] | None = None, ddim: bool = False,
                  cond_fn=None, bf16: bool = True) -> torch.Tensor:
    """n images as (n, H, W, 3) uint8 on ``device`` from SDAS with strength s (scalar or per image),
    of one class or, for a list, of one class per image.

    Nothing here waits for the GPU, so a caller can queue the next batch before this one is done.
    """
    diffusion = spaced(cfg, steps or cfg.sample_steps)
    size = flags["image_size"]
    kwargs = None
    if class_index is not None:
        y = torch.full((n,), class_index) if isinstance(class_index, int) else torch.tensor(class_index)
        kwargs = {"y": to_device(y.long(), device)}
    with autocast(device, bf16):
        x = sdas_sample(model, diffusion, (n, 3, size, size), strength, generator=generator, device=device,
                        model_kwargs=kwargs, cond_fn=cond_fn, ddim=ddim,
                        denoised_fn=_colour_clip(flags.get("x0_range"), flags.get("mean_range"), device))
    # Images were centred on the training mean colour (diffusion.color_prior); add it back.
    x = x.float() + to_device(torch.tensor(flags.get("center", [0.0, 0.0, 0.0])), x.device).view(1, 3, 1, 1)
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def sample(*args: Any, **kwargs: Any) -> np.ndarray:
    """:func:`sample_images` on the host, as a (n, H, W, 3) uint8 array."""
    return sample_images(*args, **kwargs).cpu().numpy()
