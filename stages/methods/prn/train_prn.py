"""PRN stage 2: train the fusion, attention and decoder on normal, extended and simulated anomalies (sec. 4.1).

Loss SmoothL1 + ``prn.focal_weight`` x focal (Eq. 5); Adam with weight decay. The seen anomalies are the
``data.seen_anomalies`` test images held out by ``stages.inputs`` (never in the evaluated test set). Never
looks at the test set otherwise: the weights kept are those of the last epoch.
Outputs ``prn.pt``, ``train_log.parquet`` and ``synthetic_batch.png``; resumes from ``train_state.pt``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from realnet_core.config import Config
from realnet_core.data.check import read_checked_mask
from realnet_core.data.images import load_batch, resize_mask
from realnet_core.features.backbones import build_backbone
from realnet_core.methods.prn import PRN, prn_loss
from realnet_core.runtime import accelerate, autocast, seed_generator, seeded_init
from realnet_core.synthesis.sources import TextureSource
from realnet_core.viz import make_grid, write_png
from stages.common import StageContext, resume
from stages.inputs import (
    category_split,
    files_fingerprint,
    foreground_masks,
    foreground_of,
    seen_anomalies,
    train_fingerprint,
    train_images,
)
from stages.methods.prn.batches import PRNData
from stages.methods.prn.detector import BUNDLE, save_bundle
from stages.methods.prn.prototypes import read_prototypes
from stages.methods.prn.sizes import check_size
from storage.checkpoints import save_checkpoint
from storage.keys import fingerprint_files
from storage.tables import write_table

NAME = "train_prn"
VERSION = "1"
TABLES = ("prn_train_log",)
FILES = ("backbone.weights", "prn.texture_root")
MEMORY_HINT = "a smaller prn.batch_size"


def key_config(cfg: Config) -> dict[str, Any]:
    # How often to save a resumable state changes no weight; the prototype settings are in the upstream key.
    return {"prn": cfg.section("prn", exclude={"checkpoint_every", "prototype_ratio", "kmeans_max_iter"}),
            "backbone": cfg.section("backbone"), "image_size": cfg.data.image_size,
            "use_foreground": cfg.synthesis.use_foreground,  # the target areas lie in the foreground
            "seen_anomalies": cfg.data.seen_anomalies, "seen_seed": cfg.data.seen_seed}


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    seen = seen_anomalies(cfg, dataset, category)
    files = [s.path for s in seen] + [s.mask_path for s in seen if s.mask_path]
    seen_print = fingerprint_files([os.path.abspath(p) for p in files], category_split(cfg, dataset, category).root)
    parts = [train_fingerprint(cfg, dataset, category), seen_print, *files_fingerprint(cfg, FILES)]
    if category in cfg.data.foreground:  # a configured rule moves the target areas (keys elsewhere unchanged)
        parts.append(f"foreground={foreground_of(cfg, dataset, category)}")
    return ",".join(parts)


def build_model(cfg: Config, channels: list[int], prototypes: list[int]) -> PRN:
    size = cfg.data.image_size
    sizes = [size // 4, size // 8, size // 16]
    return PRN(list(channels[:3]), sizes, prototypes, heads=cfg.prn.heads, msa_layers=cfg.prn.msa_layers)


def load_data(ctx: StageContext) -> PRNData:
    cfg, size = ctx.cfg, ctx.cfg.data.image_size
    split = category_split(cfg, ctx.dataset, ctx.category)
    images = train_images(split, size)
    fg = foreground_masks(images, foreground_of(cfg, ctx.dataset, ctx.category), cfg.synthesis.use_foreground)
    seen = seen_anomalies(cfg, ctx.dataset, ctx.category)
    seen_imgs = load_batch([s.path for s in seen], size) if seen else np.zeros((0, size, size, 3), np.uint8)
    seen_masks = np.stack([resize_mask(read_checked_mask(s), size) for s in seen]) if seen else \
        np.zeros((0, size, size), bool)
    textures = TextureSource(cfg.prn.texture_root, size=size, augment=False) if cfg.prn.texture_root else None
    return PRNData(images, fg, seen_imgs, seen_masks, textures, tuple(cfg.prn.beta))


def train_step(net: PRN, forward: Any, features: Any, opt: torch.optim.Optimizer, data: PRNData,
               gen: torch.Generator, cfg: Config, dev: torch.device) -> torch.Tensor:
    """One step: a mixed batch, the frozen encoder, PRN forward and backward, an Adam step.
    Returns (total, smooth_l1, focal) on the device."""
    images, masks, _ = data.batch(cfg.prn.batch_size, gen)
    images, masks = images.to(dev), masks.to(dev)
    with torch.no_grad(), autocast(dev, cfg.runtime.bf16):
        feats = [f.float() for f in features(images)[:3]]
    with autocast(dev, cfg.runtime.bf16):
        logits = forward(feats, out_size=tuple(images.shape[-2:]))
    loss = prn_loss(logits.float(), masks, cfg.prn.focal_weight, cfg.prn.focal_alpha, cfg.prn.focal_gamma)
    opt.zero_grad(set_to_none=True)
    loss["total"].backward()
    opt.step()
    return torch.stack([loss[k].detach() for k in ("total", "smooth_l1", "focal")])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, dev = ctx.cfg.prn, ctx.device
    check_size(ctx.cfg.data.image_size)
    backbone = build_backbone(ctx.cfg.backbone.name, ctx.cfg.backbone.weights).to(dev)
    prototypes = read_prototypes(ctx.upstream_path("prn_prototypes"))
    with seeded_init(cfg.seed, ctx.dataset, ctx.category, "train_prn", "init"):
        net = build_model(ctx.cfg, list(backbone.channels), [len(p) for p in prototypes])
    net.set_prototypes(prototypes)
    net = net.to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    features, forward = accelerate(backbone, ctx.cfg, dev), accelerate(net, ctx.cfg, dev)
    data = load_data(ctx)
    gen = seed_generator(cfg.seed, ctx.dataset, ctx.category, "train_prn")
    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(len(data.images) / data.counts(cfg.batch_size)[0]))

    state_path, epoch, log = ctx.workdir / "train_state.pt", 0, []
    if state := resume(state_path, gen, model=net, opt=opt):  # after a kill
        epoch, log = int(state["epoch"]), list(state["log"])
    resumed_from = epoch
    bar = ctx.progress(cfg.epochs * steps_per_epoch, "train_prn", unit="step")
    bar.update(epoch * steps_per_epoch)
    t0 = time.perf_counter()
    net.train()
    while epoch < cfg.epochs:
        losses = torch.stack([_step(bar, net, forward, features, opt, data, gen, ctx.cfg, dev)
                              for _ in range(steps_per_epoch)]).mean(0).cpu().tolist()
        bar.set_postfix(loss=f"{losses[0]:.4f}",
                        steps_s=f"{(bar.n - bar.initial) / (time.perf_counter() - t0):.2f}", refresh=False)
        epoch += 1
        log.append({"dataset": ctx.dataset, "category": ctx.category, "epoch": epoch, "loss": losses[0],
                    "smooth_l1": losses[1], "focal": losses[2]})
        if epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
            save_checkpoint({"model": net.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
                             "epoch": epoch, "log": log}, state_path)
    bar.close()

    save_bundle(ctx.workdir / BUNDLE, net, ctx.cfg.backbone.name, ctx.cfg.backbone.weights,
                ctx.cfg.data.image_size, cfg.top_k)
    write_table(pd.DataFrame(log), ctx.workdir / "prn_train_log.parquet")
    _preview(ctx, data)
    state_path.unlink(missing_ok=True)
    return {"epochs": epoch, "steps": epoch * steps_per_epoch, "final_loss": log[-1]["loss"] if log else None,
            "resumed_from_epoch": resumed_from, "seen_anomalies": len(data.seen),
            "seen_paths": [s.path for s in seen_anomalies(ctx.cfg, ctx.dataset, ctx.category)]}


def _step(bar, *args: Any) -> torch.Tensor:
    out = train_step(*args)
    bar.update(1)
    return out


def _preview(ctx: StageContext, data: PRNData) -> None:
    """What the model was trained on: one batch of 8 (normal, extended, simulated) over its masks."""
    images, masks, _ = data.batch(8, seed_generator(0, "preview"))
    top = (images.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
    bottom = (masks.repeat(1, 3, 1, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
    write_png(ctx.workdir / "synthetic_batch.png", make_grid(np.concatenate([top, bottom]), nrow=8))
