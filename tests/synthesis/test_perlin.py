"""Tests for the batched Perlin mask generator."""

import math

import numpy as np
import pytest
import torch

from realnet_core.synthesis.perlin import perlin_masks, perlin_noise


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_dtype_binary():
    m = perlin_masks(8, 64, 48, generator=_gen())
    assert m.shape == (8, 1, 64, 48)
    assert m.dtype == torch.float32
    assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_deterministic_for_seed():
    a = perlin_masks(6, 64, 64, generator=_gen(7))
    b = perlin_masks(6, 64, 64, generator=_gen(7))
    c = perlin_masks(6, 64, 64, generator=_gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_noise_range_and_fade_continuity():
    noise = perlin_noise(4, 64, 64, generator=_gen(1), rotate=False, min_scale_exp=2, max_scale_exp=3)
    assert noise.abs().max() <= math.sqrt(2) + 1e-5
    # C1-continuous noise: neighbouring pixels differ little compared with the value range.
    assert (noise[..., 1:] - noise[..., :-1]).abs().max() < 0.5


def test_unrotated_noise_is_zero_on_lattice_points():
    # Gradient noise vanishes at lattice points: with res = 4 cells over 64 px, and no rotation,
    # the lattice points sit every 16 px relative to the image centre.
    h = w = 64
    noise = perlin_noise(2, h, w, generator=_gen(2), rotate=False, min_scale_exp=2, max_scale_exp=3)
    assert noise.abs().mean() > 0.05
    # Pixel centres are offset by 0.5 from the lattice, so check the value is small, not zero.
    ys = [int((h - 1) / 2 + 16 * k + 0.5) for k in (-1, 0, 1)]
    vals = noise[:, 0][:, ys][:, :, ys]
    assert vals.abs().max() < 0.15


def _axis_distances(masks: torch.Tensor, min_anisotropy: float = 0.5) -> list[float]:
    """Per elongated mask: angle (degrees, 0..45) between its dominant edge orientation and an axis.

    Uses the structure tensor of the mask's finite differences; nearly isotropic masks (whose
    orientation is meaningless) are skipped.
    """
    out = []
    for m in masks[:, 0].double():
        gx = (m[:, 1:] - m[:, :-1])[:-1]
        gy = (m[1:, :] - m[:-1, :])[:, :-1]
        jxx, jyy, jxy = float((gx * gx).sum()), float((gy * gy).sum()), float((gx * gy).sum())
        if jxx + jyy == 0:
            continue
        if math.hypot(jxx - jyy, 2 * jxy) / (jxx + jyy) < min_anisotropy:
            continue
        theta = math.degrees(0.5 * math.atan2(2 * jxy, jxx - jyy)) % 90
        out.append(min(theta, 90 - theta))
    return out


def test_rotation_gives_non_axis_aligned_masks():
    # Different scales per axis make elongated blobs: unrotated they line up with the axes,
    # rotated by U(-90, 90) their orientation is spread (mean distance to an axis ~22.5 degrees).
    straight = _axis_distances(perlin_masks(128, 64, 64, generator=_gen(3), rotate=False, threshold=0.3))
    rotated = _axis_distances(perlin_masks(128, 64, 64, generator=_gen(3), rotate=True, threshold=0.3))
    assert len(straight) > 20 and len(rotated) > 20
    assert np.mean(straight) < 10
    assert np.mean(rotated) > 15


def test_rotated_corners_are_not_empty():
    # Rotating an image would leave its corners empty; rotating coordinates must not.
    m = perlin_masks(400, 32, 32, generator=_gen(4), min_scale_exp=3, max_scale_exp=5)
    corner = m[:, 0, :4, :4].amax(dim=(1, 2))
    centre = m[:, 0, 14:18, 14:18].amax(dim=(1, 2))
    assert corner.mean() > 0.5 * centre.mean() > 0


def test_nonempty_fraction_and_ensure_nonempty():
    m = perlin_masks(64, 64, 64, generator=_gen(5))
    frac = (m.flatten(1).amax(1) > 0).float().mean()
    assert frac > 0.6
    m2 = perlin_masks(64, 64, 64, generator=_gen(5), ensure_nonempty=True)
    assert bool((m2.flatten(1).amax(1) > 0).all())


def test_coverage_matches_threshold():
    low = perlin_masks(32, 64, 64, generator=_gen(6), threshold=0.2).mean()
    high = perlin_masks(32, 64, 64, generator=_gen(6), threshold=0.6).mean()
    assert low > high


def test_invalid_arguments():
    with pytest.raises(ValueError):
        perlin_masks(2, 16, 16, generator=_gen(), min_scale_exp=3, max_scale_exp=3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    a = perlin_masks(4, 64, 64, generator=_gen(9))
    b = perlin_masks(4, 64, 64, generator=_gen(9), device="cuda")
    assert b.device.type == "cuda"
    # Same random draws (CPU generator); float differences may flip a few threshold pixels.
    assert (a != b.cpu()).float().mean() < 1e-3
