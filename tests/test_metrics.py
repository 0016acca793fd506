"""Metrics against plainly written reference implementations.

The PRO reference below loops over every distinct score threshold and measures each region's
overlap and the false-positive rate directly, then integrates with an explicit trapezoid loop; it
shares no code with realnet_core.metrics.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from realnet_core.metrics import image_auroc, pixel_auroc, pixel_auroc_by_defect, pro


def reference_pro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    masks = np.asarray(masks).astype(bool)
    maps = np.asarray(maps, dtype=np.float64)
    regions = []  # list of (image index, boolean region mask)
    for i in range(masks.shape[0]):
        labels, n = ndimage.label(masks[i], structure=np.ones((3, 3)))  # 8-connected, as MVTec
        for k in range(1, n + 1):
            regions.append((i, labels == k))
    normal = ~masks
    xs, ys = [0.0], [0.0]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        overlaps = [pred[i][r].sum() / r.sum() for i, r in regions]
        xs.append((pred & normal).sum() / normal.sum())
        ys.append(float(np.mean(overlaps)))
    area = 0.0
    for j in range(1, len(xs)):
        x0, x1, y0, y1 = xs[j - 1], xs[j], ys[j - 1], ys[j]
        if x1 <= fpr_limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            y_at = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += (fpr_limit - x0) * (y0 + y_at) / 2
            break
    return area / fpr_limit


def reference_auroc(labels, scores) -> float:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    pos, neg = scores[labels], scores[~labels]
    wins = 0.0
    for p in pos:
        wins += (p > neg).sum() + 0.5 * (p == neg).sum()
    return wins / (len(pos) * len(neg))


def _blank(n=2, h=12, w=12):
    return np.zeros((n, h, w), bool), np.zeros((n, h, w))


def test_pro_perfect_and_inverted():
    masks, _ = _blank()
    masks[0, 2:5, 2:6] = True
    masks[1, 7:11, 1:3] = True
    maps = masks.astype(float) + 0.01 * np.random.default_rng(0).random(masks.shape)
    assert pro(masks, maps) == pytest.approx(1.0, abs=1e-12)
    assert pro(masks, -maps) == pytest.approx(0.0, abs=1e-12)
    assert pro(masks, -maps) == pytest.approx(reference_pro(masks, -maps), abs=1e-12)


def test_pro_one_region_hand_computed():
    # One 2-pixel region and 8 normal pixels; scores 1.0 on half the region and on one normal pixel
    # (tie), the rest of the region at 0.5, normal pixels at 0.
    masks = np.zeros((1, 2, 5), bool)
    masks[0, 0, :2] = True
    maps = np.zeros((1, 2, 5))
    maps[0, 0, 0] = 1.0
    maps[0, 1, 4] = 1.0
    maps[0, 0, 1] = 0.5
    # Curve: (0,0) -> (1/8, 1/2) -> (1/8, 1) -> (1, 1). Area to 0.3: 1/8*1/4 + (0.3-1/8)*1.
    expected = (1 / 8 * 0.25 + (0.3 - 1 / 8)) / 0.3
    assert pro(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert reference_pro(masks, maps) == pytest.approx(expected, abs=1e-12)


def test_pro_regions_weigh_equally_regardless_of_size():
    masks, maps = _blank(1, 20, 20)
    masks[0, 1:11, 1:11] = True  # 100 pixels
    masks[0, 15:17, 15:17] = True  # 4 pixels
    maps[0][masks[0]] = 0.2
    maps[0, 15:17, 15:17] = 0.9  # only the small region is found first
    maps[0, 0, 19] = 0.5  # one false positive between the two
    got = pro(masks, maps)
    assert got == pytest.approx(reference_pro(masks, maps), abs=1e-12)
    # The small region alone gives PRO 0.5 at FPR 0, not 4/104.
    assert got > 0.5


def test_pro_diagonal_pixels_form_one_region():
    masks, maps = _blank(1, 6, 6)
    masks[0, 1, 1] = masks[0, 2, 2] = True  # 8-connected, so one region
    maps[0, 1, 1] = 1.0
    # One region half found at FPR 0: PRO 0.5 until everything ties at 0 (FPR jumps to 1).
    # With 4-connectivity it would be two regions and PRO (1 + 0) / 2 = 0.5 too, so compare the
    # interpolated tail: the curve goes (0,0)->(0,0.5)->(1,1); area to 0.3 = 0.3*(0.5+0.65)/2.
    assert pro(masks, maps) == pytest.approx((0.5 + 0.65) / 2, abs=1e-12)
    masks[0, 3, 3] = True
    maps[0, 3, 3] = 1.0  # now 2/3 of the single region is found at FPR 0
    assert pro(masks, maps) == pytest.approx(reference_pro(masks, maps), abs=1e-12)
    assert pro(masks, maps) == pytest.approx((2 / 3 + 2 / 3 + 0.3 / 3) / 2, abs=1e-12)


def test_pro_heavy_ties_and_fpr_limits():
    rng = np.random.default_rng(1)
    masks = rng.random((3, 10, 10)) > 0.8
    maps = rng.integers(0, 5, (3, 10, 10)).astype(float) + masks  # few distinct values
    for limit in (0.05, 0.3, 0.77, 1.0):
        assert pro(masks, maps, fpr_limit=limit) == pytest.approx(reference_pro(masks, maps, limit), abs=1e-9)
    const = np.ones_like(maps)  # one threshold: curve (0,0) -> (1,1)
    assert pro(masks, const) == pytest.approx(0.15, abs=1e-12)
    assert reference_pro(masks, const) == pytest.approx(0.15, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_pro_random_against_reference(seed):
    rng = np.random.default_rng(seed)
    n, h, w = 3, 16, 16
    masks = np.zeros((n, h, w), bool)
    for i in range(n - 1):  # the last image stays normal
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, h - 4, 2)
            masks[i, y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = True
    maps = rng.normal(size=(n, h, w)) + 1.5 * masks
    if seed % 2:
        maps = np.round(maps, 1)  # many ties
    got = pro(masks, maps.astype(np.float32 if seed == 2 else np.float64))
    want = reference_pro(masks, maps.astype(np.float32 if seed == 2 else np.float64))
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_pro_accepts_torch_and_channel_dim():
    rng = np.random.default_rng(5)
    masks = rng.random((2, 1, 8, 8)) > 0.7
    maps = rng.random((2, 1, 8, 8)) + masks
    want = reference_pro(masks[:, 0], maps[:, 0])
    assert pro(torch.from_numpy(masks.astype(np.float32)), torch.from_numpy(maps)) == pytest.approx(want)
    assert pro(masks.astype(np.uint8) * 255, maps) == pytest.approx(want)


def test_pro_large_input_is_fast_enough():
    rng = np.random.default_rng(0)
    masks = np.zeros((100, 256, 256), bool)
    masks[::2, 100:140, 60:120] = True
    maps = rng.random(masks.shape, dtype=np.float32) + 0.3 * masks
    value = pro(masks, maps)
    assert 0.0 < value < 1.0


@pytest.mark.parametrize("seed", range(4))
def test_auroc_against_pairwise_reference(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 40)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=40) + labels, 1)  # ties included
    assert image_auroc(labels, scores) == pytest.approx(reference_auroc(labels, scores), abs=1e-12)
    assert image_auroc(torch.from_numpy(labels), torch.from_numpy(scores)) == pytest.approx(
        reference_auroc(labels, scores), abs=1e-12)
    masks = rng.random((2, 6, 6)) > 0.7
    maps = np.round(rng.random((2, 6, 6)) + 0.5 * masks, 1)
    assert pixel_auroc(masks, maps) == pytest.approx(reference_auroc(masks, maps), abs=1e-12)
    assert pixel_auroc(masks[:, None], torch.from_numpy(maps)[:, None]) == pytest.approx(
        reference_auroc(masks, maps), abs=1e-12)


def test_single_class_and_shape_errors():
    with pytest.raises(ValueError, match="one class"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="one class"):
        image_auroc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="length"):
        image_auroc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0 .*or 1"):
        image_auroc([0, 2], [0.1, 0.2])
    normal, maps = _blank()
    full = np.ones_like(normal)
    for fn in (pixel_auroc, pro):
        with pytest.raises(ValueError, match="no anomalous pixel"):
            fn(normal, maps)
        with pytest.raises(ValueError, match="no normal pixel"):
            fn(full, maps)
        with pytest.raises(ValueError, match="shape"):
            fn(full, maps[:, :5])
    bad = maps.copy()
    bad[0, 0, 0] = np.nan
    normal[0, 1, 1] = True
    with pytest.raises(ValueError, match="NaN"):
        pro(normal, bad)
    with pytest.raises(ValueError, match="fpr_limit"):
        pro(normal, maps, fpr_limit=0.0)


def test_pixel_auroc_by_defect_ranks_each_kind_against_all_normal_pixels():
    masks = np.zeros((4, 8, 8), bool)
    masks[1, :2, :2] = masks[2, 4:, 4:] = masks[3, 5:, :3] = True
    maps = np.zeros((4, 8, 8), np.float32)
    maps[0, 0, 0] = 0.5  # one normal pixel scores between the two kinds
    maps[1][masks[1]] = 1.0  # "scratch": above every normal pixel
    maps[2][masks[2]] = 0.2  # "hole": below the one high normal pixel, tied with the rest
    maps[3][masks[3]] = 1.0
    kinds = pixel_auroc_by_defect(masks, maps, ["good", "scratch", "hole", "scratch"])
    assert list(kinds) == ["hole", "scratch"]  # sorted; normal images name no kind
    assert kinds["scratch"] == 1.0
    n_normal = int((~masks).sum())
    assert kinds["hole"] == pytest.approx((n_normal - 1) / n_normal)  # beats all zeros, loses to the 0.5
    with pytest.raises(ValueError, match="3 defect names for 4 maps"):
        pixel_auroc_by_defect(masks, maps, ["good", "scratch", "hole"])
