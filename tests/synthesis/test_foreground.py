"""Tests for the per-category foreground masks."""

import cv2
import numpy as np
import pytest

from realnet_core.synthesis.foreground import ForegroundRule, apply_rule, foreground_mask, foreground_rule


def _disc_image(fg=(220, 220, 220), bg=(30, 30, 30), size=128, radius=30) -> tuple[np.ndarray, np.ndarray]:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    disc = np.zeros((size, size), np.uint8)
    cv2.circle(disc, (size // 2, size // 2), radius, 1, -1)
    img[disc.astype(bool)] = fg
    rng = np.random.default_rng(0)
    noisy = np.clip(img.astype(int) + rng.integers(-5, 6, img.shape), 0, 255).astype(np.uint8)
    return noisy, disc.astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize(
    ("dataset", "category"),
    [("mvtec", "pill"), ("mvtec", "hazelnut"), ("visa", "candle"), ("btad", "01"), ("mvtec", "metal_nut")],
)
def test_bright_rules_give_the_disc(dataset, category):
    img, disc = _disc_image()
    mask = foreground_mask(img, dataset, category)
    assert mask.dtype == bool and mask.shape == disc.shape
    assert _iou(mask, disc) > 0.9


@pytest.mark.parametrize(
    ("dataset", "category"), [("mvtec", "bottle"), ("mvtec", "screw"), ("mpdd", "metal_plate")]
)
def test_dark_rules_give_the_background(dataset, category):
    img, disc = _disc_image()
    mask = foreground_mask(img, dataset, category)
    assert _iou(mask, ~disc) > 0.9


def test_channel_choice_uses_rgb_order():
    # The disc differs from the background only in the blue channel (RGB order input).
    img, disc = _disc_image(fg=(100, 100, 230), bg=(100, 100, 20))
    assert _iou(foreground_mask(img, "mpdd", "tubes"), disc) > 0.9  # blue, Otsu, bright
    assert _iou(foreground_mask(img, "visa", "pcb1"), disc) > 0.9  # blue, triangle, bright
    # Green is flat here: an Otsu threshold on it cannot find the disc.
    assert _iou(foreground_mask(img, "mpdd", "connector"), disc) < 0.5
    img_g, disc_g = _disc_image(fg=(100, 20, 100), bg=(100, 230, 100))
    assert _iou(foreground_mask(img_g, "mpdd", "bracket_black"), disc_g) > 0.9  # green, dark


@pytest.mark.parametrize(
    ("dataset", "category"),
    [
        ("mvtec", "carpet"),
        ("mvtec", "transistor"),
        ("mvtec", "cable"),
        ("visa", "capsules"),
        ("btad", "02"),
        ("demo", "brick"),
        ("mvtec", "not_a_category"),
    ],
)
def test_whole_image_categories(dataset, category):
    img, _ = _disc_image()
    assert foreground_rule(dataset, category).whole_image
    assert foreground_mask(img, dataset, category).all()


def test_rule_table_entries():
    assert foreground_rule("mvtec", "hazelnut") == ForegroundRule(False, "gray", "triangle", "bright", 6, 6)
    assert foreground_rule("mvtec", "zipper") == ForegroundRule(False, "gray", "otsu", "dark", 6, 6)
    assert foreground_rule("visa", "pcb3") == ForegroundRule(False, "blue", "triangle", "bright", 8, 3)
    assert foreground_rule("visa", "fryum") == ForegroundRule(False, "gray", "otsu", "bright", 3, 3)
    assert foreground_rule("mpdd", "bracket_white") == ForegroundRule(False, "blue", "otsu", "bright", 6, 0)
    assert foreground_rule("mpdd", "bracket_brown") == ForegroundRule(False, "green", "otsu", "dark", 6, 0)
    assert foreground_rule("btad", "03") == ForegroundRule(False, "gray", "otsu", "bright", 15, 6)
    assert foreground_rule("MVTec-AD", "pill") == foreground_rule("mvtec", "pill")


def test_morphology_removes_specks_and_fills_holes():
    img, disc = _disc_image(size=128, radius=40)
    img[64, 64] = (30, 30, 30)  # a pinhole inside the object
    img[5, 5] = (220, 220, 220)  # an isolated bright speck in the background
    mask = foreground_mask(img, "mvtec", "pill")
    assert mask[64, 64] and not mask[5, 5]


def test_empty_mask_falls_back_to_whole_image():
    flat = np.full((32, 32, 3), 128, np.uint8)
    rule = ForegroundRule(False, "gray", "otsu", "bright", 3, 3)
    assert apply_rule(flat, rule).all()


def test_rejects_non_rgb_uint8():
    with pytest.raises(ValueError):
        foreground_mask(np.zeros((8, 8), np.uint8), "mvtec", "pill")


@pytest.mark.parametrize("size", [3, 6, 8, 15])
def test_morphology_matches_scikit_image_without_shift(size):
    # The authors used skimage closing/opening; cv2.morphologyEx shifts masks for even sizes.
    from skimage import morphology

    from realnet_core.synthesis.foreground import _close, _open

    rng = np.random.default_rng(size)
    a = np.zeros((64, 64), np.uint8)
    for _ in range(6):
        cv2.circle(a, tuple(int(v) for v in rng.integers(8, 56, 2)), int(rng.integers(3, 12)), 1, -1)
    a[rng.random(a.shape) < 0.02] ^= 1
    fp = morphology.footprint_rectangle((size, size))
    assert np.array_equal(_close(a, size).astype(bool), morphology.closing(a.astype(bool), fp))
    assert np.array_equal(_open(a, size).astype(bool), morphology.opening(a.astype(bool), fp))
