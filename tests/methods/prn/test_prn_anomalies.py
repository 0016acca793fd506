"""PRN's extended and simulated anomalies: exact masks inside the target area and the foreground, seeded."""

import numpy as np
import pytest
import torch

from realnet_core.methods.prn.anomalies import (
    extended_anomaly,
    shuffled_normal,
    simulated_anomaly,
    target_area,
)

SIZE = 64


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    seen = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    seen_mask = np.zeros((SIZE, SIZE), bool)
    seen_mask[4:12, 40:56] = True
    fg = np.zeros((SIZE, SIZE), bool)
    fg[16:48, 8:40] = True
    return normal, seen, seen_mask, fg


def _check_exact(out, mask, normal, fg):
    n = normal.astype(np.float32) / 255.0
    assert out.dtype == np.float32 and out.shape == n.shape
    assert mask.any(), "an anomalous sample carries an anomaly"
    assert not (mask & ~fg).any(), "inside the foreground"
    assert np.array_equal(out[~mask], n[~mask]), "outside the mask, the normal image bit for bit"
    assert (np.abs(out[mask] - n[mask]).max(axis=-1) > 0).mean() > 0.5, "inside it, mostly changed"


def test_target_area_is_never_empty_and_stays_in_the_foreground(images):
    fg = images[3]
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        ta = target_area(fg, gen)
        assert ta.any() and not (ta & ~fg).any()


def test_extended_anomaly_mask_is_exact(images):
    normal, seen, seen_mask, fg = images
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        out, mask = extended_anomaly(normal, fg, seen, seen_mask, gen)
        _check_exact(out, mask, normal, fg)
        assert mask.sum() <= seen_mask.sum() * 3  # a placed piece of the seen anomaly, not a whole image


def test_extended_anomaly_at_opacity_zero_replaces_the_normal_pixels(images):
    normal, seen, seen_mask, fg = images
    out, mask = extended_anomaly(normal, fg, seen, seen_mask, torch.Generator().manual_seed(2), beta_range=(0.0, 0.0))
    # beta = 0: the anomaly replaces the normal pixels, so the values inside come from the (augmented) seen image.
    n = normal.astype(np.float32) / 255.0
    assert not np.allclose(out[mask], n[mask])


def test_simulated_anomaly_mask_is_exact_for_both_sources(images):
    normal, _, _, fg = images
    gen = torch.Generator().manual_seed(3)
    texture = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    for source in (texture, shuffled_normal(normal, gen)):
        for _ in range(5):
            out, mask = simulated_anomaly(normal, fg, source, gen)
            _check_exact(out, mask, normal, fg)
    out, mask = simulated_anomaly(normal, fg, texture, torch.Generator().manual_seed(4), beta_range=(0.5, 0.5))
    n, t = normal.astype(np.float32) / 255.0, texture.astype(np.float32) / 255.0
    assert np.allclose(out[mask], 0.5 * t[mask] + 0.5 * n[mask])  # Eq. 6 with beta = 0.5


def test_shuffled_normal_permutes_whole_tiles(images):
    normal = images[0]
    gen = torch.Generator().manual_seed(5)
    out = shuffled_normal(normal, gen)
    assert out.shape == normal.shape and out.dtype == np.uint8
    t = SIZE // 8
    tiles = {out[y:y + t, x:x + t].tobytes() for y in range(0, SIZE, t) for x in range(0, SIZE, t)}
    assert len(tiles) == 64  # 64 distinct tiles of the colour-augmented image, moved as wholes
    with pytest.raises(ValueError, match="not a multiple"):
        shuffled_normal(normal[:60, :60], gen)


def test_anomalies_repeat_for_a_seed(images):
    normal, seen, seen_mask, fg = images

    def draw(seed):
        gen = torch.Generator().manual_seed(seed)
        e = extended_anomaly(normal, fg, seen, seen_mask, gen)
        s = simulated_anomaly(normal, fg, shuffled_normal(normal, gen), gen)
        return e + s

    a, b, c = draw(0), draw(0), draw(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
