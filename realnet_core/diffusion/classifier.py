"""Noisy-image classifier for classifier guidance (guided-diffusion ``EncoderUNetModel``).

``create_classifier()`` reproduces the names and shapes of OpenAI's ``256x256_classifier.pt``;
``make_cond_fn`` turns a classifier into the ``cond_fn`` the samplers take, i.e.
``scale * grad_x log p(y | x_t, t)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .unet import (
    attention_ds,
    build_encoder,
    default_channel_mult,
    multihead_attention,
    normalization,
    timestep_embedding,
    zero_module,
)

# ----------------------------------------------------------------------------------------------
# Attention pooling head
# ----------------------------------------------------------------------------------------------


class AttentionPool2d(nn.Module):
    """CLIP-style pooling: the spatial mean token attends over all positions (new qkv order)."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        qkv = self.qkv_proj(x)
        length, ch = qkv.shape[-1], c // self.num_heads
        # Unlike AttentionBlock, the layout here is [all q | all k | all v].
        q, k, v = (t.reshape(b * self.num_heads, ch, length) for t in qkv.chunk(3, dim=1))
        h = multihead_attention(q, k, v).reshape(b, c, length)
        return self.c_proj(h)[:, :, 0]


# ----------------------------------------------------------------------------------------------
# Encoder classifier
# ----------------------------------------------------------------------------------------------


class EncoderUNetModel(nn.Module):
    """Half UNet (input + middle blocks) with a pooling head: ``forward(x, t)`` -> logits."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        pool: str = "attention",
        use_checkpoint: bool = False,
    ):
        super().__init__()
        self.model_channels = model_channels
        time_embed_dim = model_channels * 4
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        self.input_blocks, self.middle_block, _, ch, ds = build_encoder(
            model_channels, in_channels, channel_mult, num_res_blocks, attention_resolutions, time_embed_dim,
            dropout=dropout, num_heads=num_heads, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
            use_checkpoint=use_checkpoint,
        )
        if pool == "attention":
            if num_head_channels == -1:
                raise ValueError("attention pooling needs num_head_channels")
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(),
                AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels),
            )
            self.class_dependent_keys = ("out.2.c_proj.weight", "out.2.c_proj.bias")
        elif pool == "adaptive":
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(nn.Conv2d(ch, out_channels, 1)), nn.Flatten(),
            )
            self.class_dependent_keys = ("out.3.weight", "out.3.bias")
        else:
            raise ValueError(f"unsupported pool {pool!r} (use 'attention' or 'adaptive')")

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.type(x.dtype))


def create_classifier(
    image_size: int = 256,
    width: int = 128,
    depth: int = 2,
    attention_resolutions: str | Iterable[int] = "32,16,8",
    use_scale_shift_norm: bool = True,
    resblock_updown: bool = True,
    pool: str = "attention",
    num_classes: int = 1000,
    num_head_channels: int = 64,
    channel_mult: Sequence[float] | str | None = None,
    in_channels: int = 3,
) -> EncoderUNetModel:
    """Build the classifier with guided-diffusion's ``classifier_*`` defaults (256x256 checkpoint)."""
    return EncoderUNetModel(
        image_size=image_size,
        in_channels=in_channels,
        model_channels=width,
        out_channels=num_classes,
        num_res_blocks=depth,
        attention_resolutions=attention_ds(image_size, attention_resolutions),
        channel_mult=default_channel_mult(image_size, channel_mult),
        num_head_channels=num_head_channels,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
        pool=pool,
    )


# ----------------------------------------------------------------------------------------------
# Guidance
# ----------------------------------------------------------------------------------------------


def make_cond_fn(
    classifier: nn.Module, scale: float = 1.0
) -> Callable[..., torch.Tensor]:
    """``cond_fn(x, t, y=None, **_) -> scale * d log p(y | x, t) / dx`` (float32 gradient).

    ``t`` must already be the original (unspaced) timestep; SpacedDiffusion maps it before the
    call. Extra model kwargs are accepted and ignored so that the same dict serves both networks.
    """

    def cond_fn(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, **_) -> torch.Tensor:
        if y is None:
            raise ValueError("classifier guidance needs class labels y in model_kwargs")
        with torch.enable_grad():
            x_in = x.detach().float().requires_grad_(True)
            log_probs = F.log_softmax(classifier(x_in, t).float(), dim=-1)
            selected = log_probs[torch.arange(len(log_probs), device=log_probs.device), y.view(-1)]
            (grad,) = torch.autograd.grad(selected.sum(), x_in)
        return grad * scale

    return cond_fn
