"""Stage 3: Anomaly-aware Features Selection (AFS, paper sec. 3.2, Eq. 4).

Scores every channel of the four backbone layers by how well its squared feature difference between
a synthetic anomaly and its normal image matches the anomaly mask, over ``afs.batches`` x
``afs.batch_size`` images, and keeps the ``afs.dims`` lowest-loss channels per layer.
Writes ``afs.parquet``: one row per (layer, channel) with loss, rank and selected.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from realnet_core.config import Config
from realnet_core.features.backbones import build_backbone
from realnet_core.methods.realnet.afs import AFSAccumulator, afs_table, select_channels
from realnet_core.runtime import accelerate, seed_generator
from stages.common import StageContext
from stages.training_data import (
    TRAINING_FILES,
    load_training_data,
    paired_features,
    synth_kwargs,
    synthesis_key,
    training_fingerprint,
)
from storage.tables import write_table

NAME = "select_features"
VERSION = "3"
TABLES = ("afs",)
FILES = TRAINING_FILES
MEMORY_HINT = "a smaller afs.batch_size"


def key_config(cfg: Config) -> dict[str, Any]:
    # Every AFS sample carries an anomaly, whatever synthesis.normal_fraction says (see run); AFS scores the
    # channels on the SIA as sampled, whatever synthesis.sia_augment and self_augment say (train_realnet's alone).
    return {"afs": cfg.section("afs"), "backbone": cfg.section("backbone"),
            "synthesis": synthesis_key(cfg, exclude={"normal_fraction", "sia_augment", "self_augment", "shade"}),
            "image_size": cfg.data.image_size}


fingerprint = training_fingerprint  # the training images, the backbone file and the synthesis sources


def afs_step(features: Any, acc: AFSAccumulator, data: Any, gen: torch.Generator, cfg: Config,
             device: torch.device) -> None:
    """One AFS batch (the stage's and the bench's): synthesize, backbone on both images, accumulate Eq. 4."""
    # Every AFS sample carries an anomaly: a normal one would only dilute Eq. 4.
    normal, aug, mask = data.batch(cfg.afs.batch_size, gen, 0.0, synth_kwargs(cfg))
    feats_a, feats_n = paired_features(features, aug, normal, device, cfg.runtime.bf16)
    acc.update(feats_a, feats_n, mask)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.afs
    backbone = build_backbone(ctx.cfg.backbone.name, ctx.cfg.backbone.weights).to(ctx.device)
    features = accelerate(backbone, ctx.cfg, ctx.device)
    data = load_training_data(ctx)
    acc = AFSAccumulator(backbone.channels)
    gen = seed_generator(cfg.seed, ctx.dataset, ctx.category, "afs")
    bar = ctx.progress(cfg.batches * cfg.batch_size, "select_features", unit="img")
    with torch.no_grad():
        for _ in range(cfg.batches):
            afs_step(features, acc, data, gen, ctx.cfg, ctx.device)
            bar.update(cfg.batch_size)
    bar.close()
    losses = acc.losses()
    selected = select_channels(losses, cfg.dims)
    table = afs_table(losses, selected, [f"layer{i + 1}" for i in range(len(losses))])
    table.insert(0, "category", ctx.category)
    table.insert(0, "dataset", ctx.dataset)
    write_table(table, ctx.workdir / "afs.parquet")
    return {"backbone": ctx.cfg.backbone.name, "channels": list(backbone.channels), "dims": list(cfg.dims),
            "images": cfg.batches * cfg.batch_size}


def read_selection(afs_dir: str) -> list[torch.Tensor]:
    """The selected channel indices per layer, in layer order, from an AFS artifact."""
    df = pd.read_parquet(f"{afs_dir}/afs.parquet")
    layers = sorted(df["layer"].unique(), key=lambda s: int(str(s).removeprefix("layer")))
    return [torch.as_tensor(sorted(df[(df.layer == lay) & df.selected].channel.tolist())) for lay in layers]
