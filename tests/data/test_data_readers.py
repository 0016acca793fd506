"""read_category and check_category on small trees in each real layout, and every error case."""

from __future__ import annotations

from pathlib import Path

import pytest

from realnet_core.data.check import check_category, check_dataset
from realnet_core.data.errors import DatasetError
from realnet_core.data.readers import CategorySplit, read_category


def _stem_pairs(split: CategorySplit) -> list[tuple[str, str]]:
    return [(Path(s.path).stem, Path(s.mask_path).name) for s in split.test if s.mask_path]


@pytest.mark.parametrize("dataset,category", [("mvtec", "bottle"), ("mpdd", "tubes"), ("demo", "brick")])
def test_mvtec_layout(tmp_path, trees, dataset, category):
    trees.mvtec_like(tmp_path, category, {"broken_large": 2, "contamination": 1})
    cat = tmp_path / category
    # Hidden files, non-images and stray folders must be ignored.
    (cat / "train" / "good" / ".DS_Store").write_bytes(b"x")
    (cat / "train" / "good" / "._000.png").write_bytes(b"x")
    (cat / "train" / "good" / "notes.txt").write_text("x")
    (cat / "test" / ".cache").mkdir()
    trees.image(cat / "train" / "good" / "UPPER.PNG", seed=9)

    split = read_category(dataset, tmp_path, category)
    assert (split.dataset, split.category, split.root) == (dataset, category, str(tmp_path))
    assert [Path(p).name for p in split.train] == ["000.png", "001.png", "002.png", "UPPER.PNG"]
    assert split.counts() == {"train": 4, "test_good": 2, "test_anomalous": 3, "masks": 3}
    assert [(s.defect, s.label, Path(s.path).name) for s in split.test] == [
        ("broken_large", 1, "000.png"), ("broken_large", 1, "001.png"), ("contamination", 1, "000.png"),
        ("good", 0, "000.png"), ("good", 0, "001.png"),
    ]
    for s in split.test:
        if s.label:
            assert s.mask_path == str(cat / "ground_truth" / s.defect / f"{Path(s.path).stem}_mask.png")
        else:
            assert s.mask_path is None
    assert read_category(dataset, str(tmp_path), category) == split  # deterministic
    assert check_category(dataset, tmp_path, category) == {
        "dataset": dataset, "category": category, **split.counts(), "supports": "image_auroc, pixel_auroc, pro",
        "unsupported": "", "non_square": 0, "warnings": []}


@pytest.mark.parametrize("category,img_ext,mask_ext", [("01", ".bmp", ".png"), ("02", ".png", ".png"),
                                                       ("03", ".bmp", ".bmp")])
def test_btad(tmp_path, trees, category, img_ext, mask_ext):
    trees.btad(tmp_path, category, img_ext, mask_ext)
    split = read_category("btad", tmp_path, category)
    assert split.counts() == {"train": 3, "test_good": 2, "test_anomalous": 2, "masks": 2}
    assert {s.defect for s in split.test} == {"ok", "ko"}
    assert all(p.endswith(img_ext) for p in split.train)
    assert _stem_pairs(split) == [("0000", f"0000{mask_ext}"), ("0001", f"0001{mask_ext}")]
    assert check_category("btad", tmp_path, category)["masks"] == 2


def test_visa_raw_csv(tmp_path, trees):
    trees.visa_raw(tmp_path)
    split = read_category("visa", tmp_path, "candle")
    assert split.counts() == {"train": 3, "test_good": 2, "test_anomalous": 2, "masks": 2}
    assert all("/candle/" in p.replace("\\", "/") for p in split.train)  # the pcb1 rows are not mixed in
    assert [(s.defect, s.label) for s in split.test] == [("bad", 1)] * 2 + [("good", 0)] * 2
    assert _stem_pairs(split) == [("000", "000.png"), ("001", "001.png")]
    assert split.test[0].mask_path == str(tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "000.png")
    assert read_category("visa", tmp_path, "pcb1").counts()["train"] == 3
    assert check_category("visa", tmp_path, "candle")["test_anomalous"] == 2


def test_visa_split_layout(tmp_path, trees):
    trees.visa_split(tmp_path)
    split = read_category("visa", tmp_path, "candle")
    assert split.counts() == {"train": 3, "test_good": 2, "test_anomalous": 2, "masks": 2}
    assert _stem_pairs(split) == [("000", "000.png"), ("001", "001.png")]


def test_visa_raw_missing_mask(tmp_path, trees):
    trees.visa_raw(tmp_path)
    missing = tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "001.png"
    missing.unlink()
    with pytest.raises(DatasetError, match="001.png"):
        read_category("visa", tmp_path, "candle")


def test_visa_without_csv_or_split(tmp_path):
    (tmp_path / "candle").mkdir()
    with pytest.raises(DatasetError, match="1cls.csv"):
        read_category("visa", tmp_path, "candle")


def test_missing_root_category_and_train(tmp_path, trees):
    with pytest.raises(DatasetError, match="nowhere"):
        read_category("mvtec", tmp_path / "nowhere", "bottle")
    with pytest.raises(DatasetError, match="category folder.*bottle"):
        read_category("mvtec", tmp_path, "bottle")
    (tmp_path / "bottle" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"train folder.*train[/\\]good"):
        read_category("mvtec", tmp_path, "bottle")


def test_empty_train(tmp_path, trees):
    trees.mvtec_like(tmp_path, "bottle", {"crack": 1}, n_train=0)
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    (tmp_path / "bottle" / "train" / "good" / ".hidden.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="no images.*good"):
        read_category("mvtec", tmp_path, "bottle")


def test_anomalous_image_without_mask(tmp_path, trees):
    trees.mvtec_like(tmp_path, "bottle", {"crack": 2})
    (tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"crack[/\\]001.png.*001_mask.png"):
        read_category("mvtec", tmp_path, "bottle")


def test_unknown_and_escaping_names(tmp_path, trees):
    trees.mvtec_like(tmp_path, "bottle", {"crack": 1})
    with pytest.raises(DatasetError, match="bottel"):
        read_category("mvtec", tmp_path, "bottel")
    with pytest.raises(DatasetError, match="unsafe"):
        read_category("mvtec", tmp_path, "../bottle")


def test_check_mask_size_mismatch(tmp_path, trees):
    trees.mvtec_like(tmp_path, "bottle", {"crack": 2})
    bad = tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png"
    trees.mask(bad, size=(16, 20))
    assert read_category("mvtec", tmp_path, "bottle").counts()["masks"] == 2  # listing is fine
    with pytest.raises(DatasetError, match=r"001_mask.png is 20x16.*16x16"):
        check_category("mvtec", tmp_path, "bottle")
    assert check_category("mvtec", tmp_path, "bottle", decode=False)["masks"] == 2


@pytest.mark.parametrize("which", ["train", "test", "mask"])
def test_check_unreadable_file(tmp_path, trees, which):
    trees.mvtec_like(tmp_path, "bottle", {"crack": 1})
    target = {
        "train": tmp_path / "bottle" / "train" / "good" / "001.png",
        "test": tmp_path / "bottle" / "test" / "crack" / "000.png",
        "mask": tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png",
    }[which]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=str(target.name)):
        check_category("mvtec", tmp_path, "bottle")


def test_check_dataset(tmp_path, trees):
    with pytest.raises(DatasetError, match="no btad category"):
        check_dataset("btad", tmp_path)
    trees.btad(tmp_path, "02", ".png", ".png")
    trees.btad(tmp_path, "03", ".bmp", ".bmp")
    result = check_dataset("btad", tmp_path)
    assert [r["category"] for r in result] == ["02", "03"]
    assert check_dataset("btad", tmp_path, ["03"])[0]["train"] == 3
    with pytest.raises(DatasetError, match="01"):
        check_dataset("btad", tmp_path, ["01"])


def test_a_test_set_without_normal_images_is_found_before_training(tmp_path, trees):
    import shutil

    from realnet_core.data.check import check_test_files
    from realnet_core.data.errors import DatasetProblems

    trees.mvtec_like(tmp_path, "bottle", {"crack": 2})
    shutil.rmtree(tmp_path / "bottle" / "test" / "good")
    split = read_category("mvtec", tmp_path, "bottle")  # listing it is fine; evaluating it is not
    for check in (lambda: check_category("mvtec", tmp_path, "bottle"), lambda: check_test_files(split)):
        with pytest.raises(DatasetProblems, match="mvtec/bottle test set has no normal images"):
            check()


def test_check_dataset_lists_the_problems_of_every_category(tmp_path, trees):
    from realnet_core.data.errors import DatasetProblems

    trees.btad(tmp_path, "02", ".png", ".png")
    trees.btad(tmp_path, "03", ".png", ".png")
    broken = [sorted((tmp_path / cat / "train" / "ok").glob("*.png"))[0] for cat in ("02", "03")]
    for path in broken:
        path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetProblems) as err:
        check_dataset("btad", tmp_path)
    assert len(err.value.problems) == 2
    assert all(str(path) in problem for path, problem in zip(broken, err.value.problems, strict=True))
