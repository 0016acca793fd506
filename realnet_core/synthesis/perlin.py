"""Batched, rotated Perlin-noise anomaly masks (the DRAEM / RealNet recipe), in torch.

Per sample: the lattice resolution is ``2^a`` cells along x and ``2^b`` along y, with ``a`` and ``b``
drawn independently from ``[min_scale_exp, max_scale_exp)`` (upper bound exclusive, as
``torch.randint`` in DRAEM and the RealNet code); gradient noise with the quintic fade
``6t^5 - 15t^4 + 10t^3`` scaled by sqrt(2); a rotation by U(-90, 90) degrees; a threshold.

Rotation is done by rotating the *sampling coordinates* instead of resampling a noise image.
Perlin noise is defined everywhere on the plane, so the rotated field is evaluated exactly, with
no interpolation blur and no empty corners (rotating an image leaves its corners blank, which
biases anomalies towards the centre). The gradient lattice is made large enough to cover the
rotated image. All samples of a batch are evaluated together in one set of tensor ops, whatever
their scales, on the target device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from realnet_core.runtime import to_device


def _fade(t: torch.Tensor) -> torch.Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _draw(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    # Random numbers come from the generator's own device, so a CPU generator gives the same masks
    # whatever device the noise is evaluated on.
    return torch.rand(shape, generator=generator, device=generator.device)


@dataclass
class PerlinDraw:
    """The random parameters of n Perlin fields, on the generator's device.

    Drawing apart from evaluating lets a caller take a fixed amount of randomness up front and
    evaluate only the fields it needs, wherever it likes (see ``blend.synthesize``).
    """

    res: torch.Tensor  # (n, 2): cells along x, along y
    angles: torch.Tensor  # (n,) rotation in radians
    grad_angles: torch.Tensor  # (n, L+1, L+1) gradient directions of the lattice

    def __len__(self) -> int:
        return len(self.res)

    def rows(self, index: slice | torch.Tensor) -> PerlinDraw:
        return PerlinDraw(self.res[index], self.angles[index], self.grad_angles[index])


def draw_perlin(
    n: int,
    h: int,
    w: int,
    *,
    generator: torch.Generator,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    rotate: bool = True,
) -> PerlinDraw:
    """Scales, angles and lattice gradients for n fields of size (h, w), from ``generator``."""
    if n < 0 or h <= 0 or w <= 0:
        raise ValueError(f"invalid noise shape n={n}, h={h}, w={w}")
    if not 0 <= min_scale_exp < max_scale_exp:
        raise ValueError(f"need 0 <= min_scale_exp < max_scale_exp, got {min_scale_exp}, {max_scale_exp}")
    gdev = generator.device
    exps = torch.randint(min_scale_exp, max_scale_exp, (n, 2), generator=generator, device=gdev)
    res = (2.0 ** exps.double()).float()
    if rotate:
        angles = (_draw((n,), generator) * 180.0 - 90.0) * (math.pi / 180.0)
    else:
        angles = torch.zeros(n, device=gdev)
    # Lattice size: the rotated image spans at most its diagonal in every direction.
    max_res = float(2 ** (max_scale_exp - 1))
    lattice = int(math.ceil(max_res * math.hypot(h, w) / min(h, w))) + 2
    grad_angles = _draw((n, lattice + 1, lattice + 1), generator) * (2.0 * math.pi)
    return PerlinDraw(res, angles, grad_angles)


def evaluate_perlin(draw: PerlinDraw, h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The fields of ``draw`` as continuous noise, shape (n, 1, h, w), float32, roughly in [-1, 1]."""
    device = torch.device(device) if device is not None else draw.res.device
    n, lattice = len(draw), draw.grad_angles.shape[-1] - 1
    res, angles, grad_angles = (to_device(t, device) for t in (draw.res, draw.angles, draw.grad_angles))
    grads = torch.stack((torch.cos(grad_angles), torch.sin(grad_angles)), dim=-1)  # (n, L+1, L+1, 2)

    # Pixel centres relative to the image centre, in pixels.
    ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2.0
    xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2.0
    py, px = torch.meshgrid(ys, xs, indexing="ij")  # (h, w)
    cos = torch.cos(angles).view(n, 1, 1)
    sin = torch.sin(angles).view(n, 1, 1)
    rx = cos * px - sin * py
    ry = sin * px + cos * py
    # Same cell size as DRAEM's unrotated noise (res cells across the image), centred in the lattice.
    u = rx * (res[:, 0].view(n, 1, 1) / w) + lattice / 2.0
    v = ry * (res[:, 1].view(n, 1, 1) / h) + lattice / 2.0

    u0 = u.floor()
    v0 = v.floor()
    fu = u - u0
    fv = v - v0
    iu = u0.long().clamp_(0, lattice - 1)
    iv = v0.long().clamp_(0, lattice - 1)
    bi = torch.arange(n, device=device).view(n, 1, 1)

    def corner(di: int, dj: int) -> torch.Tensor:
        g = grads[bi, iv + dj, iu + di]  # (n, h, w, 2)
        return g[..., 0] * (fu - di) + g[..., 1] * (fv - dj)

    tu = _fade(fu)
    tv = _fade(fv)
    top = torch.lerp(corner(0, 0), corner(1, 0), tu)
    bottom = torch.lerp(corner(0, 1), corner(1, 1), tu)
    noise = math.sqrt(2.0) * torch.lerp(top, bottom, tv)
    return noise.unsqueeze(1)


def perlin_noise(
    n: int,
    h: int,
    w: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    rotate: bool = True,
) -> torch.Tensor:
    """Continuous Perlin noise, shape (n, 1, h, w), float32, roughly in [-1, 1]."""
    draw = draw_perlin(n, h, w, generator=generator, min_scale_exp=min_scale_exp, max_scale_exp=max_scale_exp,
                       rotate=rotate)
    return evaluate_perlin(draw, h, w, device if device is not None else generator.device)


def perlin_masks(
    n: int,
    h: int,
    w: int,
    *,
    generator: torch.Generator,
    device: torch.device | str | None = None,
    min_scale_exp: int = 0,
    max_scale_exp: int = 6,
    threshold: float = 0.5,
    rotate: bool = True,
    ensure_nonempty: bool = False,
    max_redraws: int = 50,
) -> torch.Tensor:
    """Binary Perlin masks, shape (n, 1, h, w), float32 with values in {0, 1}.

    With ``ensure_nonempty`` the empty masks are redrawn (new scales, angles and gradients) up to
    ``max_redraws`` times; the draws are deterministic for a given generator state.
    """
    kwargs = dict(
        generator=generator,
        device=device,
        min_scale_exp=min_scale_exp,
        max_scale_exp=max_scale_exp,
        rotate=rotate,
    )
    masks = (perlin_noise(n, h, w, **kwargs) > threshold).float()
    if ensure_nonempty:
        for _ in range(max_redraws):
            empty = masks.flatten(1).amax(dim=1) == 0
            k = int(empty.sum())
            if k == 0:
                break
            masks[empty] = (perlin_noise(k, h, w, **kwargs) > threshold).float()
    return masks
