"""Dataset access shared by the stages: the category split, images at model size, foreground masks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from realnet_core.config import Config
from realnet_core.data import folders
from realnet_core.data.check import read_checked_mask
from realnet_core.data.errors import DatasetError
from realnet_core.data.images import load_batch, resize_mask
from realnet_core.data.readers import CategorySplit, TestSample, read_category
from realnet_core.data.registry import DATASETS, check_name
from realnet_core.features.backbones import RANDOM
from realnet_core.runtime import derive_seed
from realnet_core.synthesis.foreground import ForegroundRule, apply_rule, rule_for
from storage.keys import fingerprint_files


def data_root(cfg: Config, dataset: str) -> str:
    roots = cfg.data.roots
    if dataset not in roots:
        raise DatasetError(f"no data root for dataset {dataset!r}: set data.roots.{dataset}=PATH "
                           f"(or --data-root with --dataset {dataset})")
    return roots[dataset]


def listed_split(cfg: Config, dataset: str, category: str, strict: bool = True) -> CategorySplit:
    """The category's files as its layout lists them, before the validation share is taken out: the folder
    dataset's plain folders (``data.folders``) or MVTec-style tree, else the benchmark readers."""
    check_name(dataset, category)
    if dataset == folders.DATASET:
        share = {"test_fraction": cfg.data.test_fraction, "seed": cfg.data.split_seed, "strict": strict}
        spec = cfg.data.folders.get(category)
        if spec is not None:
            return folders.read_plain(category, **spec.model_dump(), **share)
        if dataset not in cfg.data.roots:
            raise DatasetError(f"folder/{category}: neither data.folders.{category} (plain folders) nor "
                               "data.roots.folder (--data-root, a tree <root>/<category>/train/good) is set")
        return folders.read_tree(data_root(cfg, dataset), category, **share)
    return read_category(dataset, data_root(cfg, dataset), category, strict=strict)


def category_split(cfg: Config, dataset: str, category: str) -> CategorySplit:
    """The split every stage reads: ``train`` without the validation share (``data.val_fraction``), which is
    ``val``, and a test set without the seen anomalies (``data.seen_anomalies``). One place, so that no
    training stage can read a validation image and no metric a seen anomaly.

    The listing is read afresh each time (it is cheap): a served process must see new files.
    """
    split = listed_split(cfg, dataset, category)
    split.train, split.val = folders.hold_out(split.train, cfg.data.val_fraction, cfg.data.split_seed,
                                              folders.VAL_SALT)
    seen = {s.path for s in _seen(cfg, split)}
    return replace(split, test=[s for s in split.test if s.path not in seen]) if seen else split


def seen_anomalies(cfg: Config, dataset: str, category: str) -> list[TestSample]:
    """The ``data.seen_anomalies`` anomalous test images a method may train on, out of every test set."""
    return _seen(cfg, listed_split(cfg, dataset, category))


def _seen(cfg: Config, split: CategorySplit) -> list[TestSample]:
    # Seeded by (data.seen_seed, dataset, category) over the sorted listing: the same images on every machine.
    n = cfg.data.seen_anomalies
    if n == 0:
        return []
    bad = [s for s in split.test if s.label == 1]
    if n > len(bad):
        raise DatasetError(f"data.seen_anomalies={n}: {split.root}/{split.category} has only {len(bad)} "
                           "anomalous test images")
    rng = np.random.default_rng(derive_seed(cfg.data.seen_seed, split.dataset, split.category, "seen"))
    return [bad[i] for i in sorted(rng.choice(len(bad), n, replace=False))]


def present_categories(cfg: Config, dataset: str) -> list[str]:
    """Categories of the dataset that exist under its root (dataset-scoped diffusion trains on these)."""
    from pathlib import Path

    if dataset == folders.DATASET:  # its categories are the ones the run names
        return list(cfg.data.categories) or sorted(cfg.data.folders)
    root = Path(data_root(cfg, dataset))
    found = [c for c in DATASETS[dataset] if (root / c).is_dir()]
    if not found:
        raise DatasetError(f"{root}: none of the {dataset} categories is present")
    return found


def _fingerprint(paths: list[str], root: str) -> str:
    # Relative to the dataset root, so the same data mounted elsewhere keeps its artifact keys.
    return fingerprint_files([os.path.abspath(p) for p in paths], os.path.abspath(root))


def config_files(cfg: Config, keys: Iterable[str]) -> dict[str, str]:
    """The files and folders that these config keys name and that ``cfg`` actually reads."""
    used = {
        "diffusion.init_checkpoint": cfg.diffusion.init_checkpoint,
        "sia.classifier_checkpoint": cfg.sia.classifier_checkpoint if cfg.sia.guidance_scale > 0 else None,
        "backbone.weights": None if cfg.backbone.weights == RANDOM else cfg.backbone.weights,
        "synthesis.texture_root": cfg.synthesis.texture_root if cfg.synthesis.source == "texture" else None,
        "prn.texture_root": cfg.prn.texture_root,
    }
    return {key: used[key] for key in keys if used[key]}


def check_config_files(cfg: Config, keys: Iterable[str]) -> dict[str, Path]:
    """:func:`config_files` as paths, each checked to exist; the error names the config key."""
    out = {}
    for key, path in config_files(cfg, keys).items():
        if not os.path.exists(path):
            raise FileNotFoundError(f"{key}: no such file or directory: {path}")
        out[key] = Path(path)
    return out


def files_fingerprint(cfg: Config, keys: Iterable[str]) -> list[str]:
    """Sizes and mtimes of those files: weights replaced under the same name give new keys, as data does."""
    return [fingerprint_files([p], p if p.is_dir() else p.parent) for p in check_config_files(cfg, keys).values()]


def train_fingerprint(cfg: Config, dataset: str, category: str) -> str:
    split = category_split(cfg, dataset, category)
    return _fingerprint(split.train, split.root)


def val_fingerprint(cfg: Config, dataset: str, category: str) -> str:
    split = category_split(cfg, dataset, category)
    return _fingerprint(split.val, split.root)


def test_fingerprint(cfg: Config, dataset: str, category: str) -> str:
    split = category_split(cfg, dataset, category)
    return _fingerprint([s.path for s in split.test] + [s.mask_path for s in split.test if s.mask_path], split.root)


def train_images(split: CategorySplit, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8; raises DatasetError naming any unreadable file."""
    if not split.train:
        raise DatasetError(f"{split.root}/{split.category}: no training images")
    return load_batch(split.train, size)


def foreground_of(cfg: Config, dataset: str, category: str) -> ForegroundRule:
    """The category's foreground rule: ``data.foreground`` where it names one, else the built-in rule."""
    configured = cfg.data.foreground.get(category)
    if isinstance(configured, BaseModel):
        configured = configured.model_dump()
    return rule_for(dataset, category, configured)


def foreground_masks(images: np.ndarray, rule: ForegroundRule, enabled: bool = True) -> np.ndarray:
    """(N, H, W) bool foreground per image, so that synthetic anomalies land on the object."""
    if not enabled:
        return np.ones(images.shape[:3], dtype=bool)
    return np.stack([apply_rule(img, rule) for img in images])


def test_masks(split: CategorySplit, size: int) -> np.ndarray:
    """(N, size, size) bool ground truth; normal images get an empty mask."""
    out = np.zeros((len(split.test), size, size), dtype=bool)
    for i, sample in enumerate(split.test):
        if sample.mask_path:
            # Resizing would silently misalign a mask made for another image size: refuse it instead.
            out[i] = resize_mask(read_checked_mask(sample), size)
    return out


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1], converted on ``device``."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
    return x.to(device).permute(0, 3, 1, 2).float().div_(255)
