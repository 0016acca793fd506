"""The demo dataset: MVTec layout, determinism, and exact masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tree_digest

from realnet_core.data.check import check_dataset
from realnet_core.data.demo import DEFECTS, _random_crop, _textures, _tint, add_defect, build_demo_dataset
from realnet_core.data.images import read_mask, read_rgb
from realnet_core.data.readers import read_category


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "ds", size=64, n_train=4, n_test_good=2,
                              n_test_bad=8, seed=3)


def test_layout_and_counts(demo_root):
    assert (demo_root / "README.txt").read_text().count("skimage.data.") == 2
    result = check_dataset("demo", demo_root)
    assert [r["category"] for r in result] == ["brick", "grass"]
    for r in result:
        assert (r["train"], r["test_good"], r["test_anomalous"], r["masks"]) == (4, 2, 8, 8)
    split = read_category("demo", demo_root, "grass")
    assert sorted({s.defect for s in split.test}) == sorted((*DEFECTS, "good"))
    img = read_rgb(split.train[0])
    assert img.shape == (64, 64, 3)
    # The tint makes the channels differ: grass is green.
    assert img[..., 1].mean() > img[..., 0].mean() > 0


def test_masks_binary_non_empty_and_sized(demo_root):
    for cat in ("brick", "grass"):
        for s in read_category("demo", demo_root, cat).test:
            if not s.label:
                continue
            raw = np.unique(read_rgb(s.mask_path))
            assert set(raw.tolist()) == {0, 255}
            area = read_mask(s.mask_path).mean()
            lo, hi = (0.004, 0.08) if s.defect == "scratch" else (0.02, 0.16)
            assert lo <= area <= hi, (s.mask_path, area)


def test_deterministic(tmp_path, demo_root):
    again = build_demo_dataset(tmp_path / "again", size=64, n_train=4, n_test_good=2, n_test_bad=8, seed=3)
    assert tree_digest(again) == tree_digest(demo_root)
    other = build_demo_dataset(tmp_path / "other", size=64, n_train=4, n_test_good=2, n_test_bad=8, seed=4)
    assert tree_digest(other) != tree_digest(demo_root)


@pytest.mark.parametrize("kind", DEFECTS)
def test_defects_change_exactly_the_masked_pixels(kind):
    tex = {c: _tint(g, c) for c, g in _textures().items()}
    for seed in range(4):
        rng = np.random.default_rng(seed)
        clean = _random_crop(tex["brick"], 96, rng)
        donor = _random_crop(tex["grass"], 96, rng)
        img, mask = add_defect(clean, kind, rng, "brick", donor)
        assert img.dtype == np.uint8 and img.shape == clean.shape and mask.dtype == bool
        np.testing.assert_array_equal(img[~mask], clean[~mask])
        # Visible: most masked pixels differ clearly from the clean image.
        diff = np.abs(img.astype(int) - clean.astype(int)).max(axis=2)[mask]
        assert (diff > 8).mean() > 0.6, (kind, seed)
        assert 0.003 < mask.mean() < 0.2


def test_unknown_defect():
    with pytest.raises(ValueError, match="unknown defect"):
        add_defect(np.zeros((64, 64, 3), np.uint8), "dent", np.random.default_rng(0), "brick",
                   np.zeros((64, 64, 3), np.uint8))
