"""A Gaussian filter of anomaly maps as fixed torch convolutions, so that inference traces to ONNX."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _kernel(sigma: float, radius: int, like: Tensor) -> Tensor:
    x = torch.arange(-radius, radius + 1, dtype=like.dtype, device=like.device)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_pad(x: Tensor, r: int, dim: int) -> Tensor:
    # scipy.ndimage's default "reflect" mode repeats the edge value (d c b a | a b c d), which torch's
    # own "reflect" does not; built from flipped slices, so it stays plain tensor ops.
    n = x.shape[dim]
    return torch.cat([x.narrow(dim, 0, r).flip(dim), x, x.narrow(dim, n - r, r).flip(dim)], dim=dim)


def gaussian_blur(maps: Tensor, sigma: float = 4.0, truncate: float = 4.0) -> Tensor:
    """(B, H, W) -> (B, H, W), as ``scipy.ndimage.gaussian_filter(m, sigma)`` filters each map (the
    authors' smoothing): a separable kernel of radius ``int(truncate * sigma + 0.5)``, edges reflected.

    The radius is cut to the map's side for maps smaller than the kernel.
    """
    if sigma <= 0:
        return maps
    b, h, w = maps.shape
    x = maps.unsqueeze(1)
    for dim, n in ((2, h), (3, w)):
        r = min(int(truncate * sigma + 0.5), n)
        k = _kernel(sigma, r, x)
        shape = (1, 1, 2 * r + 1, 1) if dim == 2 else (1, 1, 1, 2 * r + 1)
        x = F.conv2d(_symmetric_pad(x, r, dim), k.view(shape))
    return x.squeeze(1)
