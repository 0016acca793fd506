"""PRN stage 1: the multi-scale prototypes (PRN sec. 3.1).

Per scale (the encoder's first three layers), k-means on the normal training images' whole flattened feature
maps gives K = ``prn.prototype_ratio`` x (number of training images) prototypes (at least 1), frozen from then
on. Outputs ``prototypes.pt`` (the centres per scale) and ``prototype_clusters.parquet``: one row per (layer,
cluster) with its size, its members' mean L2 distance to the centre and the training image nearest to it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from realnet_core.config import Config
from realnet_core.features.backbones import build_backbone
from realnet_core.methods.prn.prototypes import fit_prototypes
from realnet_core.runtime import autocast, derive_seed
from stages.common import StageContext
from stages.inputs import category_split, files_fingerprint, to_tensor, train_fingerprint, train_images
from stages.methods.prn.sizes import check_size
from storage.checkpoints import load_checkpoint, save_checkpoint
from storage.tables import write_table

NAME = "prn_prototypes"
VERSION = "1"
TABLES = ("prototype_clusters",)
FILES = ("backbone.weights",)
MEMORY_HINT = "a smaller data.image_size"
SCALES = 3  # layer1-3 (sec. 4.1)
BATCH = 16  # images per backbone pass


def key_config(cfg: Config) -> dict[str, Any]:
    prn = cfg.section("prn")
    return {"prn": {k: prn[k] for k in ("prototype_ratio", "kmeans_max_iter", "seed")},
            "backbone": cfg.section("backbone"), "image_size": cfg.data.image_size}


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    return ",".join([train_fingerprint(cfg, dataset, category), *files_fingerprint(cfg, FILES)])


def prototype_count(n_images: int, ratio: float) -> int:
    """K: the paper's share of the normal images, at least one."""
    return max(1, min(n_images, round(ratio * n_images)))


@torch.no_grad()
def encoder_features(backbone: torch.nn.Module, images: np.ndarray, device: torch.device,
                     bf16: bool) -> list[np.ndarray]:
    """The first three feature maps of uint8 (N, H, W, 3) images, float32 numpy, in batches."""
    out: list[list[np.ndarray]] = [[] for _ in range(SCALES)]
    for lo in range(0, len(images), BATCH):
        with autocast(device, bf16):
            feats = backbone(to_tensor(images[lo: lo + BATCH], device))
        for j in range(SCALES):
            out[j].append(feats[j].float().cpu().numpy())
    return [np.concatenate(f) for f in out]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.prn
    check_size(ctx.cfg.data.image_size)  # before any work: train_prn needs it
    split = category_split(ctx.cfg, ctx.dataset, ctx.category)
    images = train_images(split, ctx.cfg.data.image_size)
    backbone = build_backbone(ctx.cfg.backbone.name, ctx.cfg.backbone.weights).to(ctx.device)
    feats = encoder_features(backbone, images, ctx.device, ctx.cfg.runtime.bf16)
    k = prototype_count(len(images), cfg.prototype_ratio)
    centres, rows = [], []
    bar = ctx.progress(SCALES, "prn_prototypes", unit="scale")
    for j, f in enumerate(feats):
        seed = derive_seed(cfg.seed, ctx.dataset, ctx.category, f"layer{j + 1}") % (2 ** 32)
        c, labels = fit_prototypes(f, k, seed, cfg.kmeans_max_iter)
        centres.append(torch.from_numpy(c))
        dist = np.linalg.norm((f - c[labels]).reshape(len(f), -1), axis=1)
        for cluster in range(k):
            members = np.flatnonzero(labels == cluster)
            nearest = members[np.argmin(dist[members])] if len(members) else None
            rows.append({"dataset": ctx.dataset, "category": ctx.category, "layer": f"layer{j + 1}",
                         "cluster": cluster, "size": len(members),
                         "mean_distance": float(dist[members].mean()) if len(members) else float("nan"),
                         "nearest_image": split.train[nearest] if nearest is not None else None})
        bar.update(1)
    bar.close()
    save_checkpoint({"prototypes": centres, "backbone": ctx.cfg.backbone.name,
                     "image_size": ctx.cfg.data.image_size}, ctx.workdir / "prototypes.pt")
    write_table(pd.DataFrame(rows), ctx.workdir / "prototype_clusters.parquet")
    return {"prototypes": k, "images": len(images), "shapes": [list(c.shape) for c in centres]}


def read_prototypes(folder: str) -> list[torch.Tensor]:
    """The (K, c, h, w) prototypes per scale of a prn_prototypes artifact."""
    return list(load_checkpoint(f"{folder}/prototypes.pt")["prototypes"])
