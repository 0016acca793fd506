"""The development set: real photographs in the MVTec layout, determinism, every defect kind, exact masks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tree_digest

from realnet_core.data.check import check_dataset
from realnet_core.data.demo import add_defect
from realnet_core.data.devset import DEV_CATEGORIES, DEV_DEFECTS, _photograph, build_dev_dataset
from realnet_core.data.images import read_mask, read_rgb
from realnet_core.data.readers import read_category
from realnet_core.data.registry import DATASETS


@pytest.fixture(scope="module")
def dev_root(tmp_path_factory):
    return build_dev_dataset(tmp_path_factory.mktemp("dev") / "ds", size=64, n_train=3, n_test_good=2,
                             n_test_bad=5, seed=1)


def test_every_category_is_registered_and_counted(dev_root):
    assert DATASETS["dev"] == DEV_CATEGORIES
    result = check_dataset("dev", dev_root)
    assert [r["category"] for r in result] == list(DEV_CATEGORIES)
    for r in result:
        assert (r["train"], r["test_good"], r["test_anomalous"], r["masks"]) == (3, 2, 5, 5)
    split = read_category("dev", dev_root, "coins")
    assert sorted({s.defect for s in split.test}) == sorted((*DEV_DEFECTS, "good"))


def test_same_seed_same_bytes_other_seed_other_images(dev_root, tmp_path):
    again = build_dev_dataset(tmp_path / "again", size=64, n_train=3, n_test_good=2, n_test_bad=5, seed=1)
    assert tree_digest(again) == tree_digest(dev_root)
    other = build_dev_dataset(tmp_path / "other", size=64, n_train=3, n_test_good=2, n_test_bad=5, seed=2,
                              categories=("moon",))
    assert tree_digest(other)["moon/train/good/000.png"] != tree_digest(dev_root)["moon/train/good/000.png"]


def test_masks_mark_changed_pixels_only(dev_root):
    for category in DEV_CATEGORIES:
        for s in read_category("dev", dev_root, category).test:
            if s.label:
                mask = read_mask(s.mask_path)
                assert mask.any() and not mask.all(), s.path
                assert read_rgb(s.path).shape[:2] == mask.shape


@pytest.mark.parametrize("kind", DEV_DEFECTS)
def test_each_defect_changes_only_its_mask(kind):
    photo = _photograph("cell")
    clean = np.clip(photo[:96, :96], 0, 255).astype(np.uint8)
    donor = np.clip(_photograph("coins")[:96, :96], 0, 255).astype(np.uint8)
    img, mask = add_defect(clean, kind, np.random.default_rng(0), "cell", donor, stain_colour=(40, 90, 60))
    assert mask.any()
    np.testing.assert_array_equal(img[~mask], clean[~mask])
    # Most of the region visibly changes: a defect a person can see, not a mask over untouched pixels.
    changed = np.abs(img.astype(int) - clean.astype(int)).max(axis=2) > 3
    assert changed[mask].mean() > 0.5


def test_smudge_blurs_the_region():
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, (96, 96, 3)).astype(np.uint8)  # pure noise: a blur flattens it
    img, mask = add_defect(clean, "smudge", np.random.default_rng(1), "cell", clean)
    assert img[mask].astype(float).std() < 0.5 * clean[mask].astype(float).std()


def test_unknown_category_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown development categories"):
        build_dev_dataset(tmp_path, categories=("gravel",))


def test_the_baseline_reports_every_defect_kinds_pixel_auroc(dev_root):
    from flows.bench.devbench import knn_baseline
    from realnet_core.config import load_config

    cfg = load_config("demo", ["data.dataset=dev", f"data.roots.dev={dev_root}", "data.val_fraction=0",
                               "data.image_size=64"])
    row = knn_baseline(cfg, "moon")
    assert {f"pixel_auroc_{kind}" for kind in DEV_DEFECTS} <= set(row)
    assert all(0.0 <= row[f"pixel_auroc_{kind}"] <= 1.0 for kind in DEV_DEFECTS)
    assert 0.0 <= row["pixel_auroc"] <= 1.0 and 0.0 <= row["image_auroc"] <= 1.0
