"""Dataset validation: everything the readers check, plus that every file decodes and masks fit.

Meant to run once before a long pipeline run, so that a broken file fails in seconds with its
name in the message instead of hours later inside a training job.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .images import check_file, image_size, read_mask
from .readers import CategorySplit, TestSample, read_category
from .registry import DATASETS, check_name


def check_category(dataset: str, root: str | os.PathLike, category: str, decode: bool = True) -> dict:
    """Validate one category and return its counts (train, test_good, test_anomalous, masks).

    With ``decode=False`` only the file listing is checked (fast); otherwise every image and mask
    is decoded and each mask must have its image's height and width.
    """
    split = read_category(dataset, root, category)
    if decode:
        for path in split.train:
            image_size(path)
        for sample in split.test:
            if sample.mask_path is None:
                image_size(sample.path)
            else:
                read_checked_mask(sample)
    return {"dataset": dataset, "category": category, **split.counts()}


def check_test_files(split: CategorySplit) -> None:
    """Every test image and mask is there, non-empty and not cut short (no decoding: fast).

    Training stages call this first: evaluate needs these files, and a broken one should fail
    the run before hours of training, not after.
    """
    for sample in split.test:
        for path in (sample.path, sample.mask_path):
            if path is None:
                continue
            try:
                check_file(path)
            except DatasetError as e:
                raise DatasetError(f"{split.dataset}/{split.category} test set: {e} (found before training, "
                                   f"since evaluate will need it; `realnet data check` lists every problem)") from e


def read_checked_mask(sample: TestSample) -> np.ndarray:
    """The sample's mask as (H, W) bool; DatasetError unless it has its image's height and width."""
    size = image_size(sample.path)
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
    root_path = Path(root)
    if not root_path.is_dir():
        raise DatasetError(f"dataset root for {dataset} not found: {root_path}")
    if categories is None:
        categories = [c for c in DATASETS[dataset] if (root_path / c).is_dir()]
        if not categories:
            raise DatasetError(f"no {dataset} category folder found under {root_path} "
                               f"(expected some of: {', '.join(DATASETS[dataset])})")
    return [check_category(dataset, root_path, c, decode=decode) for c in categories]
