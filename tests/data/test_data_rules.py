"""The data rules (README, "Data rules"): non-square images are reported and stretched, fully transparent
images are errors, symlinks that leave the dataset root or lead nowhere are errors, and a check lists every
problem of a category, not only the first one."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from realnet_core.data.check import check_category, check_dataset
from realnet_core.data.errors import DatasetError, DatasetProblems
from realnet_core.data.readers import read_category


def test_a_dangling_symlink_is_an_error_counted_with_the_others(tmp_path, trees):
    # Before, a dangling link was dropped from the listing without a word, and the run trained on less.
    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    train = root / "bottle" / "train" / "good"
    (train / "010.png").symlink_to(tmp_path / "gone.png")
    (train / "011.png").symlink_to(train / "missing.png")
    with pytest.raises(DatasetProblems) as err:
        read_category("mvtec", root, "bottle")
    assert len(err.value.problems) == 2
    assert all("dangling symlink" in p for p in err.value.problems)
    assert str(train / "010.png") in err.value.problems[0] and str(train / "011.png") in err.value.problems[1]


def test_a_symlink_out_of_the_dataset_root_is_an_error_and_one_inside_is_followed(tmp_path, trees):
    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    outside = trees.image(tmp_path / "elsewhere" / "x.png")
    train = root / "bottle" / "train" / "good"
    (train / "010.png").symlink_to(train / "000.png")  # inside the root: fine
    assert len(read_category("mvtec", root, "bottle").train) == 4
    (train / "011.png").symlink_to(outside)
    with pytest.raises(DatasetError, match=f"{train / '011.png'} leads out of the dataset root {root}"):
        read_category("mvtec", root, "bottle")


def test_a_mask_symlinked_out_of_the_root_is_an_error(tmp_path, trees):
    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    mask = root / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    mask.rename(tmp_path / "mask.png")
    mask.symlink_to(tmp_path / "mask.png")
    with pytest.raises(DatasetError, match=f"{mask} leads out of the dataset root"):
        read_category("mvtec", root, "bottle")


def test_every_missing_mask_is_listed_not_only_the_first(tmp_path, trees):
    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 3})
    for i in (0, 2):
        (root / "bottle" / "ground_truth" / "crack" / f"{i:03d}_mask.png").unlink()
    for check in (lambda: check_dataset("mvtec", root), lambda: read_category("mvtec", root, "bottle")):
        with pytest.raises(DatasetProblems) as err:  # before, the first one only
            check()
        assert len(err.value.problems) == 2 and all("has no mask" in p for p in err.value.problems)
        assert "crack/000.png" in err.value.problems[0] and "crack/002.png" in err.value.problems[1]


def test_non_square_images_are_counted_and_named_as_a_warning(tmp_path, trees):
    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    wide = trees.image(root / "bottle" / "train" / "good" / "000.png", shape=(16, 24, 3))
    report = check_category("mvtec", root, "bottle")
    assert report["non_square"] == 1
    (warning,) = report["warnings"]
    assert f"{wide} is 24x16 (WxH)" in warning and "stretched to a square of data.image_size" in warning


def test_data_check_prints_the_warning_and_still_succeeds(tmp_path, trees, capsys):
    from flows.cli import main

    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    trees.image(root / "bottle" / "test" / "good" / "000.png", shape=(20, 16, 3))
    assert main(["data", "check", "--dataset", "mvtec", "--root", str(root), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)[0]["non_square"] == 1
    assert err.startswith("realnet: warning: mvtec/bottle: 1 images are not square")


def test_data_check_lists_a_transparent_image_and_a_dangling_link_together(tmp_path, trees, capsys):
    from flows.cli import main

    root = trees.mvtec_like(tmp_path / "mvtec", "bottle", {"crack": 1})
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = 200  # colours under an alpha of 0 everywhere
    clear = trees.image(root / "bottle" / "train" / "good" / "001.png", value=rgba)
    os.symlink(tmp_path / "gone.png", root / "bottle" / "test" / "good" / "005.png")
    trees.mask(root / "bottle" / "ground_truth" / "crack" / "000_mask.png")
    assert main(["data", "check", "--dataset", "mvtec", "--root", str(root)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"realnet: error: 2 problems in mvtec under {root}"
    assert "dangling symlink" in lines[0] and f"fully transparent (alpha 0 everywhere), so its colours are not " \
        f"the picture: {clear}" in lines[1], lines
