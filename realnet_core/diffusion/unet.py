"""Diffusion UNet whose parameter names and shapes match OpenAI guided-diffusion.

The released 256x256 checkpoints (``256x256_diffusion.pt`` and ``_uncond.pt``) load into
``create_unet()`` with ``load_state_dict(strict=True)``: module nesting and ordering follow the
upstream ``UNetModel`` exactly. Mixed precision is left to ``torch.autocast``; GroupNorm always
accumulates its statistics in float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from realnet_core.runtime import no_autocast

# ----------------------------------------------------------------------------------------------
# Small building blocks
# ----------------------------------------------------------------------------------------------


class GroupNorm32(nn.GroupNorm):
    """GroupNorm whose statistics are always accumulated in float32, whatever the activations' dtype.

    bf16 activations (under autocast) are normalised in bf16: the CPU and CUDA kernels accumulate the
    mean and variance in float32 anyway, and bf16 has float32's range, so this matches the float32
    round trip to bf16 rounding. That round trip (autocast runs ``group_norm`` in float32) moved 512 of
    the 937 GB of an eager SIA forward at batch 64, against 102 GB in bf16 (BENCHMARKS.md, the roofline),
    and kept a float32 copy of every input alive for the backward pass.
    Other dtypes (float16 has too little range) keep upstream's float32 round trip.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:
            return super().forward(x.float()).type(x.dtype)
        weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
        with no_autocast(x.device.type):
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    # Residual branches start as identity maps, as upstream does.
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (cos half first, then sin half), float32, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepBlock(nn.Module):
    """Marker: a module whose forward takes the timestep embedding as second argument."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TimestepEmbedSequential(nn.Sequential):
    """Sequential that hands ``emb`` to the children that want it (named ``N.M`` like upstream)."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


# ----------------------------------------------------------------------------------------------
# Residual and attention blocks
# ----------------------------------------------------------------------------------------------


class ResBlock(TimestepBlock):
    """Residual block conditioned on the timestep embedding, optionally resampling."""

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float = 0.0,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
        use_checkpoint: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.updown:
            # Resample between the norm/activation and the conv, as upstream does.
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = torch.addcmul(shift, self.out_layers[0](h), 1 + scale)  # one pass over h, not two in eager mode
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def multihead_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v: (N, ch, T) -> (N, ch, T) via SDPA (which wants (N, T, ch))."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


class AttentionBlock(nn.Module):
    """Spatial self-attention with upstream's legacy qkv layout: per head, [q | k | v] channels."""

    def __init__(
        self, channels: int, num_heads: int = 1, num_head_channels: int = -1, use_checkpoint: bool = False
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"channels {channels} not divisible by head width {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[-1]
        ch = c // self.num_heads
        q, k, v = qkv.reshape(b * self.num_heads, 3 * ch, length).split(ch, dim=1)
        h = multihead_attention(q, k, v).reshape(b, c, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


# ----------------------------------------------------------------------------------------------
# Shared encoder half (also used by the noisy-image classifier)
# ----------------------------------------------------------------------------------------------


def build_encoder(
    model_channels: int,
    in_channels: int,
    channel_mult: Sequence[float],
    num_res_blocks: int,
    attention_ds: Iterable[int],
    time_embed_dim: int,
    *,
    dropout: float,
    num_heads: int,
    num_head_channels: int,
    use_scale_shift_norm: bool,
    resblock_updown: bool,
    conv_resample: bool = True,
    use_checkpoint: bool = False,
) -> tuple[nn.ModuleList, nn.Module, list[int], int, int]:
    """Input blocks and middle block. Returns (input_blocks, middle, skip_channels, ch, ds)."""
    attention_ds = set(attention_ds)

    def res(ch_in: int, ch_out: int, **kw) -> ResBlock:
        return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm,
                        use_checkpoint=use_checkpoint, **kw)

    def attn(ch: int) -> AttentionBlock:
        return AttentionBlock(ch, num_heads, num_head_channels, use_checkpoint)

    ch = int(channel_mult[0] * model_channels)
    blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    skip_channels, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
            ch = int(mult * model_channels)
            if ds in attention_ds:
                layers.append(attn(ch))
            blocks.append(TimestepEmbedSequential(*layers))
            skip_channels.append(ch)
        if level != len(channel_mult) - 1:
            down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
            blocks.append(TimestepEmbedSequential(down))
            skip_channels.append(ch)
            ds *= 2
    middle = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
    return blocks, middle, skip_channels, ch, ds


# ----------------------------------------------------------------------------------------------
# UNet
# ----------------------------------------------------------------------------------------------


class UNetModel(nn.Module):
    """guided-diffusion UNet: ``forward(x, timesteps, y=None)`` -> (B, out_channels, H, W)."""

    # Keys that depend on the number of classes; load_pretrained may re-initialise them.
    class_dependent_keys: tuple[str, ...] = ("label_emb.weight",)

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
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_ds = set(attention_resolutions)  # downsampling factors, as upstream names them
        self.image_size = image_size
        self.in_channels, self.out_channels = in_channels, out_channels
        self.model_channels = model_channels
        self.num_classes = num_classes
        time_embed_dim = model_channels * 4

        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, time_embed_dim)

        self.input_blocks, self.middle_block, skip_channels, ch, ds = build_encoder(
            model_channels, in_channels, channel_mult, num_res_blocks, attention_ds, time_embed_dim,
            dropout=dropout, num_heads=num_heads, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
            conv_resample=conv_resample, use_checkpoint=use_checkpoint,
        )

        def res(ch_in: int, ch_out: int, **kw) -> ResBlock:
            return ResBlock(ch_in, time_embed_dim, dropout, ch_out, use_scale_shift_norm,
                            use_checkpoint=use_checkpoint, **kw)

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [res(ch + skip_channels.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels, use_checkpoint))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        input_ch = int(channel_mult[0] * model_channels)
        self.out = nn.Sequential(
            normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


# ----------------------------------------------------------------------------------------------
# Factory and checkpoint loading
# ----------------------------------------------------------------------------------------------

_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


def default_channel_mult(image_size: int, channel_mult: Sequence[float] | str | None = None) -> tuple:
    """Upstream's per-resolution channel multipliers, or the explicit tuple / "1,2,2" string."""
    if channel_mult is None or channel_mult == "":
        if image_size not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size={image_size}; pass one explicitly")
        return _DEFAULT_CHANNEL_MULT[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(m) if "." in m else int(m) for m in channel_mult.split(","))
    return tuple(channel_mult)


def attention_ds(image_size: int, attention_resolutions: str | Iterable[int]) -> tuple[int, ...]:
    """Resolutions ("32,16,8") -> downsampling factors (8, 16, 32 at 256 px), as script_util does."""
    if isinstance(attention_resolutions, str):
        attention_resolutions = [int(r) for r in attention_resolutions.split(",") if r.strip()]
    return tuple(image_size // int(r) for r in attention_resolutions)


def create_unet(
    image_size: int = 256,
    num_channels: int = 256,
    num_res_blocks: int = 2,
    channel_mult: Sequence[float] | str | None = None,
    attention_resolutions: str | Iterable[int] = "32,16,8",
    num_heads: int = 4,
    num_head_channels: int = 64,
    num_heads_upsample: int = -1,
    learn_sigma: bool = True,
    num_classes: int | None = None,
    use_scale_shift_norm: bool = True,
    resblock_updown: bool = True,
    dropout: float = 0.0,
    use_checkpoint: bool = False,
    in_channels: int = 3,
) -> UNetModel:
    """Build the UNet with guided-diffusion's flag names (defaults = the 256x256 checkpoints)."""
    return UNetModel(
        image_size=image_size,
        in_channels=in_channels,
        model_channels=num_channels,
        out_channels=in_channels * (2 if learn_sigma else 1),
        num_res_blocks=num_res_blocks,
        attention_resolutions=attention_ds(image_size, attention_resolutions),
        dropout=dropout,
        channel_mult=default_channel_mult(image_size, channel_mult),
        num_classes=num_classes,
        use_checkpoint=use_checkpoint,
        num_heads=num_heads,
        num_head_channels=num_head_channels,
        num_heads_upsample=num_heads_upsample,
        use_scale_shift_norm=use_scale_shift_norm,
        resblock_updown=resblock_updown,
    )


def set_grad_checkpoint(model: nn.Module, on: bool = True) -> None:
    """Recompute every residual and attention block in the backward pass instead of storing its activations.

    The same arithmetic runs, so gradients are unchanged; only memory and time move.
    """
    for block in model.modules():
        if hasattr(block, "use_checkpoint"):
            block.use_checkpoint = on


def load_pretrained(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state_dict`` strictly, except for class-count dependent tensors.

    Keys in ``model.class_dependent_keys`` (``label_emb.weight`` for the UNet, the output
    projection for the classifier) are re-initialised when the checkpoint's class count differs
    or the checkpoint has no such key. Returns the re-initialised keys. Any other missing,
    unexpected or mis-shaped key raises ``ValueError`` naming it.
    """
    own = model.state_dict()
    resizable = set(getattr(model, "class_dependent_keys", ()))
    missing = [k for k in own if k not in state_dict and k not in resizable]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and k not in resizable and tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        problems = (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape))
        for name, items in problems:
            if items:
                shown = ", ".join(items[:10]) + (f" ... (+{len(items) - 10})" if len(items) > 10 else "")
                parts.append(f"{name}: {shown}")
        raise ValueError("checkpoint does not fit the model; " + "; ".join(parts))

    reinit = [
        k for k in own
        if k in resizable and (k not in state_dict or tuple(state_dict[k].shape) != tuple(own[k].shape))
    ]
    for module_name in sorted({k.rsplit(".", 1)[0] for k in reinit}):
        model.get_submodule(module_name).reset_parameters()
    fresh = model.state_dict()
    merged = {k: (fresh[k] if k in reinit else state_dict[k]) for k in own}
    model.load_state_dict(merged, strict=True)
    return reinit
