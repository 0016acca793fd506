"""``realnet devbench``: a profile on the development set, beside nearest-neighbour patch matching.

For each category of the development set (real photographs with hand-made defects,
``realnet_core.data.devset``) it runs the whole pipeline of a profile, without Prefect, and then
the PatchCore-style baseline on the same backbone and image size, and prints one row per category
and their means. The numbers are test-set numbers: use them to compare methods and settings, and
keep the choices general (the same for every category), never one category's best.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from realnet_core import metrics
from realnet_core.config import Config
from realnet_core.data.images import load_batch
from realnet_core.features.backbones import build_backbone
from realnet_core.features.patch_knn import PatchKNN
from realnet_core.runtime import for_inference
from stages.inputs import category_split, test_masks, to_tensor, train_images
from storage.arrays import open_image_array

DATASET = "dev"


@torch.no_grad()
def _features(backbone: torch.nn.Module, images: np.ndarray, batch: int = 16) -> list[torch.Tensor]:
    parts = [backbone(to_tensor(images[i: i + batch])) for i in range(0, len(images), batch)]
    return [torch.cat(level) for level in zip(*parts, strict=True)]


def knn_baseline(cfg: Config, category: str) -> dict[str, Any]:
    """Metrics of nearest-neighbour patch matching on ``cfg``'s backbone and image size."""
    t0 = time.perf_counter()
    size = cfg.data.image_size
    split = category_split(cfg, DATASET, category)
    backbone = for_inference(build_backbone(cfg.backbone.name, cfg.backbone.weights))
    knn = PatchKNN().fit(_features(backbone, train_images(split, size)))
    test = load_batch([s.path for s in split.test], size)
    patch = knn.patch_scores(_features(backbone, test))
    maps = PatchKNN.to_maps(patch, size).numpy()
    labels = np.array([s.label for s in split.test])
    masks = test_masks(split, size)
    return {"image_auroc": metrics.image_auroc(labels, patch.flatten(1).amax(1).numpy()),
            "pixel_auroc": metrics.pixel_auroc(masks, maps),
            "pro": metrics.pro(masks, maps, fpr_limit=cfg.evaluate.pro_fpr_limit),
            "seconds": time.perf_counter() - t0, **_by_defect(split, masks, maps)}


def _by_defect(split, masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """``pixel_auroc_<kind>`` for each defect kind of the test split."""
    kinds = metrics.pixel_auroc_by_defect(masks, maps, [s.defect for s in split.test])
    return {f"pixel_auroc_{kind}": v for kind, v in kinds.items()}


def _pipeline_metrics(cfg: Config, category: str, artifacts: str) -> dict[str, Any]:
    from flows.runner import run_direct

    result = run_direct(cfg, [category], DATASET, None, artifacts)
    path = next(r["path"] for r in result["stages"] if r["stage"] == "evaluate")
    row = pd.read_parquet(Path(path) / "metrics.parquet").iloc[0]
    ran = sum(r["seconds"] for r in result["stages"] if r["status"] == "ran")
    split = category_split(cfg, DATASET, category)
    maps = np.asarray(open_image_array(Path(path) / "maps.zarr", name="maps")[:], np.float32)
    return {"image_auroc": float(row.image_auroc), "pixel_auroc": float(row.pixel_auroc), "pro": float(row.pro),
            "seconds": ran, **_by_defect(split, test_masks(split, maps.shape[-1]), maps)}


def run_devbench(profile: str = "demo", overrides: list[str] | None = None, categories: list[str] | None = None,
                 root: str = "dev_data", artifacts: str = "artifacts_dev", baseline_only: bool = False) -> pd.DataFrame:
    """One row per category (and a mean row): the profile's and the baseline's metrics and seconds."""
    from flows.graph import resolve_targets
    from flows.plan import ensure_demo_data, make_config

    # The protocol trains on all 60 normal images of a category, as the baseline does: no validation share.
    chosen = [f"data.categories={categories}"] if categories else []
    cfg = make_config(profile, ["data.val_fraction=0", *(overrides or []), *chosen], DATASET, {DATASET: root})
    targets = resolve_targets(cfg, categories, DATASET)
    ensure_demo_data(cfg, targets)
    rows = []
    for _, category in targets:
        row: dict[str, Any] = {"category": category}
        if not baseline_only:
            for k, v in _pipeline_metrics(cfg, category, artifacts).items():
                row[f"{cfg.profile}_{k}"] = v
        for k, v in knn_baseline(cfg, category).items():
            row[f"knn_{k}"] = v
        rows.append(row)
    table = pd.DataFrame(rows)
    mean = table.drop(columns="category").mean().to_dict()
    return pd.concat([table, pd.DataFrame([{"category": "mean", **mean}])], ignore_index=True)
