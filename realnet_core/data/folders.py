"""A user's own data: an MVTec-style tree with any category name, or plain folders named in the config.

Layouts (``folder`` is the dataset name; a category is any safe name):

- MVTec-style: ``<root>/<name>/train/good`` (required), ``test/<defect>`` (``good`` is normal; optional) and
  ``ground_truth/<defect>/<stem>_mask.png`` or ``<stem>.png`` (optional).
- Plain folders: ``normal`` (required), ``abnormal``, ``masks`` (matched to abnormal images by file stem,
  ``<stem>.png`` or ``<stem>_mask.png``) and ``normal_test``, each a folder path.

Masks are optional: an anomalous image without one is still scored, and the pixel metrics say why they are
missing (``metric_support``). Where there are no normal test images, a seeded share of the normal images is
held out for testing (``hold_out``), never trained on. A mask that matches no image is an error: it is
almost always a misnamed file, and its image would otherwise be scored without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import DatasetError, DatasetProblems
from .readers import CategorySplit, TestSample, _find_mask, is_image_file, link_problem, list_images
from .registry import check_name

DATASET = "folder"
NORMAL = "good"  # the MVTec name of the normal folders
ABNORMAL = "abnormal"  # the defect name of a plain ``abnormal`` folder's images
MASK_SUFFIXES = ("_mask", "")
# Salts of the seeded shares, so that the test share and the validation share are independent draws.
TEST_SALT, VAL_SALT = 1, 2


def hold_out(paths: list[str], fraction: float, seed: int, salt: int) -> tuple[list[str], list[str]]:
    """``(kept, held)``: a seeded ``fraction`` of ``paths`` held out, both sorted.

    Rule: ``round(n * fraction)`` images, at least one when ``fraction > 0``, and never all of them (one
    image stays), so that a small folder still trains. The draw depends only on the sorted names and the seed.
    """
    n = len(paths)
    if fraction <= 0 or n < 2:
        return sorted(paths), []
    k = min(max(1, round(n * fraction)), n - 1)
    order = sorted(paths)
    picked = set(np.random.default_rng([seed, salt]).permutation(n)[:k].tolist())
    return [p for i, p in enumerate(order) if i not in picked], [p for i, p in enumerate(order) if i in picked]


def _folder(path: str | os.PathLike, what: str, category: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise DatasetError(f"{what} folder for {DATASET}/{category} not found: {p}")
    return p


def _images(folder: Path, what: str, category: str, problems: list[str], required: bool = False,
            root: Path | None = None) -> list[Path]:
    found = list_images(folder, root or folder, problems)
    if required and not found and not problems:
        raise DatasetError(f"{what} folder for {DATASET}/{category} has no images: {folder}")
    return found


def _mask_stem(name: str) -> str:
    stem = Path(name).stem
    return stem[: -len("_mask")] if stem.endswith("_mask") else stem


def _orphan_masks(mask_dir: Path, image_stems: set[str]) -> list[str]:
    """One problem per mask file that matches no image (``<stem>.png`` or ``<stem>_mask.png``)."""
    if not mask_dir.is_dir():
        return []
    out = []
    for p in sorted(mask_dir.iterdir()):
        if is_image_file(p.name) and Path(p.name).stem not in image_stems and _mask_stem(p.name) not in image_stems:
            out.append(f"mask {p} has no image (expected an image named {_mask_stem(p.name)}.* beside the "
                       "anomalous images)")
    return out


def _anomalous(images: list[Path], defect: str, mask_dir: Path | None, root: Path,
               problems: list[str]) -> list[TestSample]:
    out = []
    for img in images:
        mask = _find_mask(mask_dir, img.stem, MASK_SUFFIXES) if mask_dir is not None else None
        if mask is not None:
            problem = link_problem(mask, root)
            if problem:
                problems.append(problem)
                continue
        out.append(TestSample(str(img), 1, defect, str(mask) if mask is not None else None))
    if mask_dir is not None:
        problems += _orphan_masks(mask_dir, {p.stem for p in images})
    return out


def _finish(category: str, root: Path, train: list[Path], normal_test: list[Path] | None,
            anomalous: list[TestSample], test_fraction: float, seed: int, problems: list[str],
            strict: bool) -> CategorySplit:
    names = [str(p) for p in train]
    if normal_test:
        good = [str(p) for p in normal_test]
    else:  # no normal test images: a seeded share of the normal images is the normal test set
        names, good = hold_out(names, test_fraction, seed, TEST_SALT)
    test = [TestSample(p, 0, NORMAL, None) for p in good] + sorted(anomalous, key=lambda s: (s.defect, s.path))
    split = CategorySplit(DATASET, category, str(root), names, test, problems)
    if strict and problems:
        raise DatasetError(problems[0]) if len(problems) == 1 else DatasetProblems(f"{DATASET}/{category}", problems)
    return split


def read_tree(root: str | os.PathLike, category: str, test_fraction: float = 0.2, seed: int = 0,
              strict: bool = True) -> CategorySplit:
    """``<root>/<category>`` in the MVTec layout, test and ground truth optional (see the module docstring)."""
    check_name(DATASET, category)
    root_path = Path(root)
    if not root_path.is_dir():
        raise DatasetError(f"dataset root for {DATASET} not found: {root_path}")
    cat = _folder(root_path / category, "category", category)
    problems: list[str] = []
    train = _images(_folder(cat / "train" / NORMAL, "train", category), "train", category, problems, True,
                    root_path)
    good: list[Path] = []
    anomalous: list[TestSample] = []
    test_dir = cat / "test"
    if test_dir.is_dir():
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            images = list_images(defect_dir, root_path, problems)
            if defect_dir.name == NORMAL:
                good = images
                continue
            mask_dir = cat / "ground_truth" / defect_dir.name
            anomalous += _anomalous(images, defect_dir.name, mask_dir if mask_dir.is_dir() else None, root_path,
                                    problems)
    gt = cat / "ground_truth"
    if gt.is_dir():  # a ground-truth folder without its test folder: every mask there is an orphan
        for mask_dir in sorted(p for p in gt.iterdir() if p.is_dir() and not (test_dir / p.name).is_dir()):
            problems += _orphan_masks(mask_dir, set())
    return _finish(category, root_path, train, good, anomalous, test_fraction, seed, problems, strict)


def read_plain(category: str, normal: str, abnormal: str | None = None, masks: str | None = None,
               normal_test: str | None = None, test_fraction: float = 0.2, seed: int = 0,
               strict: bool = True) -> CategorySplit:
    """Plain folders of one category (see the module docstring); every path as given, each its own root."""
    check_name(DATASET, category)
    problems: list[str] = []
    normal_dir = _folder(normal, "normal", category)
    train = _images(normal_dir, "normal", category, problems, True)
    good = _images(_folder(normal_test, "normal_test", category), "normal_test", category, problems, True) \
        if normal_test else []
    anomalous: list[TestSample] = []
    if abnormal:
        abnormal_dir = _folder(abnormal, "abnormal", category)
        mask_dir = _folder(masks, "masks", category) if masks else None
        images = _images(abnormal_dir, "abnormal", category, problems, True)
        anomalous = _anomalous(images, ABNORMAL, mask_dir, mask_dir or abnormal_dir, problems)
    elif masks:
        raise DatasetError(f"{DATASET}/{category}: masks folder {masks} given without an abnormal folder "
                           "(masks mark the defects of the abnormal images)")
    given = [Path(p) for p in (normal, abnormal, masks, normal_test) if p]
    root = Path(os.path.commonpath([str(p.resolve()) for p in given]))
    return _finish(category, root, train, good, anomalous, test_fraction, seed, problems, strict)


def metric_support(split: CategorySplit) -> dict[str, str | None]:
    """Each metric's status for this split: None where it can be computed, else the reason it cannot."""
    counts = split.counts()
    good, bad, masks = counts["test_good"], counts["test_anomalous"], counts["masks"]
    image = ("no anomalous test images" if not bad else None) or ("no normal test images" if not good else None)
    if not bad:
        pixel = "no anomalous test images"
    elif not masks:
        pixel = "no ground-truth masks"
    elif masks < bad:
        pixel = f"masks for only {masks} of {bad} anomalous test images"
    else:
        pixel = None
    threshold = None if split.val else "no validation images (data.val_fraction is 0)"
    return {
        "image_auroc": image, "pixel_auroc": pixel, "pro": pixel, "threshold": threshold,
        "precision_recall": (threshold or ("no anomalous test images" if not bad else None)),
        "fpr": (threshold or ("no normal test images" if not good else None)),
    }
