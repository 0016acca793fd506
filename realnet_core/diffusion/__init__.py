"""Diffusion side of RealNet: guided-diffusion compatible UNet/classifier, Gaussian diffusion
maths, timestep respacing and the SDAS sampler."""

from .classifier import EncoderUNetModel, create_classifier, make_cond_fn
from .gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from .respace import SpacedDiffusion, create_diffusion, space_timesteps
from .sdas import sample_loop, sdas_sample
from .unet import UNetModel, create_unet, load_pretrained

__all__ = [
    "EncoderUNetModel",
    "GaussianDiffusion",
    "SpacedDiffusion",
    "UNetModel",
    "create_classifier",
    "create_diffusion",
    "create_unet",
    "get_named_beta_schedule",
    "load_pretrained",
    "make_cond_fn",
    "sample_loop",
    "sdas_sample",
    "space_timesteps",
]
