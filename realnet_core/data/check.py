"""Dataset validation: everything the readers check, plus that every file decodes and masks fit.

Meant to run once before a long pipeline run, so that a broken file fails in seconds with its
name in the message instead of hours later inside a training job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from .errors import DatasetError, DatasetProblems
from .folders import metric_support
from .images import check_file, image_size, read_mask
from .readers import CategorySplit, TestSample, read_category, require_root
from .registry import DATASETS, OPEN_DATASETS, check_name


def check_category(dataset: str, root: str | os.PathLike, category: str, decode: bool = True) -> dict:
    """Validate one category and return its counts (train, test_good, test_anomalous, masks).

    With ``decode=False`` only the file listing is checked (fast); otherwise every image and mask
    is decoded and each mask must have its image's height and width. Raises DatasetProblems naming
    every broken file, not just the first.
    """
    return check_split(read_category(dataset, root, category, strict=False), decode)


def check_split(split: CategorySplit, decode: bool = True) -> dict:
    """:func:`check_category` for a split already listed (with ``strict=False``), e.g. a user's own folders;
    the report also says which metrics its test set supports (``supports``, and ``unsupported`` with why)."""
    dataset, category = split.dataset, split.category
    problems = [*split.problems, *_test_set_kinds(split)]
    non_square: list[str] = []
    if decode:
        for path in split.train:
            _note_shape(non_square, path, _collect(problems, image_size, path))
        empty, masks = [], 0
        for sample in split.test:
            size = _collect(problems, image_size, sample.path)
            _note_shape(non_square, sample.path, size)
            if sample.mask_path is None or size is None:
                continue
            mask = _collect(problems, _mask_of_size, sample, size)
            if mask is not None:
                masks += 1
                if not mask.any():
                    empty.append(sample.mask_path)
        problems += _all_empty(split, empty, masks)
    if problems:
        raise DatasetProblems(f"{dataset}/{category}", problems)
    report = {"dataset": dataset, "category": category, **split.counts()}
    if split.val:
        report["val"] = len(split.val)
    support = metric_support(split)
    report["supports"] = ", ".join(k for k in ("image_auroc", "pixel_auroc", "pro") if support[k] is None) or "none"
    reasons = {k: v for k, v in support.items() if v and k in ("image_auroc", "pixel_auroc", "pro")}
    report["unsupported"] = "; ".join(f"{k}: {v}" for k, v in reasons.items()) or ""
    if decode:
        report["non_square"] = len(non_square)
        report["warnings"] = [non_square_warning(f"{dataset}/{category}", non_square)] if non_square else []
    return report


def _note_shape(non_square: list[str], path: str, size: tuple[int, int] | None) -> None:
    if size is not None and size[0] != size[1]:
        non_square.append(f"{path} is {size[1]}x{size[0]} (WxH)")


def non_square_warning(where: str, non_square: list[str]) -> str:
    """Not an error (VisA's images are all wider than high, and the paper resizes them too): every image
    is resized to a square of ``data.image_size`` without keeping its aspect ratio, which stretches it."""
    listed = "; ".join(non_square[:3]) + (f"; and {len(non_square) - 3} more" if len(non_square) > 3 else "")
    return (f"{where}: {len(non_square)} images are not square and will be stretched to a square of "
            f"data.image_size: {listed}")


def _collect(problems: list[str], check, *args):
    try:
        return check(*args)
    except DatasetError as e:
        problems.append(str(e))
        return None


def _all_empty(split: CategorySplit, empty: list[str], decoded: int) -> list[str]:
    # Pixel AUROC and PRO need anomalous pixels: with every mask empty, evaluate fails after all the training.
    if not decoded or len(empty) < decoded:
        return []
    listed = ", ".join(empty[:3]) + (f" (+{len(empty) - 3} more)" if len(empty) > 3 else "")
    return [f"{split.dataset}/{split.category} test set: all {len(empty)} masks are empty (pixel AUROC and PRO "
            f"need anomalous pixels; a mask marks them with values > 0): {listed}"]


def _test_set_kinds(split: CategorySplit) -> list[str]:
    # Image AUROC needs normal and anomalous test images; evaluate would fail after all the training.
    # A user's own data may have normal images only: its metrics say what they lack (folders.metric_support).
    counts = split.counts()
    if split.dataset in OPEN_DATASETS:
        return [] if split.test else [f"{split.dataset}/{split.category} has no test images"]
    missing = [kind for kind, key in (("normal", "test_good"), ("anomalous", "test_anomalous")) if not counts[key]]
    return [f"{split.dataset}/{split.category} test set has no {kind} images (image AUROC needs both kinds)"
            for kind in missing]


def check_test_files(split: CategorySplit) -> None:
    """Every test image and mask is there, non-empty and not cut short (images are not decoded: fast), the
    test set holds both normal and anomalous images, and not every mask is empty (masks are decoded: they
    are small, a second or so for a whole MVTec category).

    Training stages call this first: evaluate needs these files, and a broken one should fail
    the run before hours of training, not after.
    """
    problems = _test_set_kinds(split)
    for sample in split.test:
        for path in (sample.path, sample.mask_path):
            if path is not None:
                _collect(problems, check_file, path)
    if not problems:
        masks = [s.mask_path for s in split.test if s.mask_path is not None]
        decoded = [(m, _collect(problems, read_mask, m)) for m in masks]
        empty = [m for m, mask in decoded if mask is not None and not mask.any()]
        problems += _all_empty(split, empty, sum(mask is not None for _, mask in decoded))
    if problems:
        raise DatasetProblems(f"{split.dataset}/{split.category} test set (found before training, since "
                              "evaluate will need it; `realnet data check` lists every problem)", problems)


def read_checked_mask(sample: TestSample) -> np.ndarray:
    """The sample's mask as (H, W) bool; DatasetError unless it has its image's height and width."""
    return _mask_of_size(sample, image_size(sample.path))


def _mask_of_size(sample: TestSample, size: tuple[int, int]) -> np.ndarray:
    mask = read_mask(sample.mask_path)
    if mask.shape != size:
        raise DatasetError(
            f"mask {sample.mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
            f"{sample.path} is {size[1]}x{size[0]}"
        )
    return mask


def check_dataset(
    dataset: str,
    root: str | os.PathLike,
    categories: Iterable[str] | None = None,
    decode: bool = True,
) -> list[dict]:
    """Check several categories; by default those of the registry that exist under ``root``."""
    if dataset not in DATASETS:
        check_name(dataset, "_")  # raises the standard unknown-dataset message
    root_path = require_root(dataset, root)
    if categories is None:
        categories = [c for c in DATASETS[dataset] if (root_path / c).is_dir()]
        if not categories:
            raise DatasetError(f"no {dataset} category folder found under {root_path} "
                               f"(expected some of: {', '.join(DATASETS[dataset])})")
    reports, problems = [], []
    for category in categories:  # every category's problems, not only the first one's
        try:
            reports.append(check_category(dataset, root_path, category, decode=decode))
        except DatasetProblems as e:
            problems += e.problems
        except DatasetError as e:
            problems.append(str(e))
    if problems:
        raise DatasetProblems(f"{dataset} under {root_path}", problems)
    return reports
