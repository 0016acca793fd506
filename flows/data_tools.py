"""``realnet data check`` for a config's datasets: a user's own folders, which metrics each test set supports,
the foreground rule in use, and ``--preview``: a picture of training images with their foreground."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from realnet_core.config import Config
from realnet_core.data import folders
from realnet_core.data.check import check_split
from realnet_core.data.errors import DatasetError, DatasetProblems
from realnet_core.data.images import load_batch
from realnet_core.synthesis.foreground import describe_rule
from realnet_core.viz import make_grid, mask_outline, write_png
from stages.inputs import foreground_masks, foreground_of, listed_split

PREVIEW_IMAGES = 8
PREVIEW_SIZE = 160


def folder_categories(cfg: Config) -> list[str]:
    """The categories of the folder dataset: those in ``data.folders`` and every ``<root>/<name>/train`` tree."""
    names = set(cfg.data.folders)
    root = cfg.data.roots.get(folders.DATASET)
    if root and Path(root).is_dir():
        names |= {p.name for p in Path(root).iterdir() if (p / "train").is_dir() and not p.name.startswith(".")}
    if not names:
        raise DatasetError("folder dataset: no category found (give --root with <root>/<name>/train/good, or "
                           "data.folders.<name>.normal in --config)")
    return sorted(names)


def check_categories(cfg: Config, dataset: str, categories: list[str], decode: bool = True) -> list[dict]:
    """Check every category (all problems together), as training will read it: the validation share held out."""
    reports, problems = [], []
    for category in categories:
        try:
            split = listed_split(cfg, dataset, category, strict=False)
            split.train, split.val = folders.hold_out(split.train, cfg.data.val_fraction, cfg.data.split_seed,
                                                      folders.VAL_SALT)
            report = check_split(split, decode)
            report["foreground"] = describe_rule(foreground_of(cfg, dataset, category))
            reports.append(report)
        except DatasetProblems as exc:
            problems += exc.problems
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        raise DatasetProblems(dataset, problems)
    return reports


def write_preview(cfg: Config, dataset: str, category: str, out: str | Path) -> Path:
    """``<out>/<dataset>_<category>_foreground.png``: up to 8 training images (top row) and the same with the
    background dimmed and the foreground outlined (bottom row), so a rule can be judged before training."""
    split = listed_split(cfg, dataset, category)
    picks = np.unique(np.linspace(0, len(split.train) - 1, min(PREVIEW_IMAGES, len(split.train))).round().astype(int))
    images = load_batch([split.train[i] for i in picks], PREVIEW_SIZE)
    rule = foreground_of(cfg, dataset, category)
    fg = foreground_masks(images, rule)
    shown = np.where(fg[..., None], images, (images * 0.25).astype(np.uint8))
    shown = np.stack([mask_outline(img, m, (255, 255, 0)) for img, m in zip(shown, fg, strict=True)])
    grid = make_grid(np.concatenate([images, shown]), nrow=len(images),
                     labels=[Path(split.train[i]).name for i in picks] + [describe_rule(rule)] * len(images))
    path = Path(out) / f"{dataset}_{category}_foreground.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, grid)
    return path
