"""Stage 4: train the reconstruction networks and the discriminator (paper Eq. 5 and 6).

Each step blends synthetic anomalies into half of a batch of training images, reconstructs the
AFS-selected features of every layer, selects residuals with RRS and segments them.
Never looks at the test set: the weights kept are those of the last step, or with ``train.ema_rate`` their
moving average over the last steps (the CPU profile's high learning rate leaves the last step's noisy).
Outputs ``realnet.pt``, ``train_log.parquet`` and ``synthetic_batch.png``; resumes from ``train_state.pt``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from realnet_core.config import Config, TrainConfig
from realnet_core.data.check import check_test_files
from realnet_core.features.backbones import build_backbone
from realnet_core.methods.realnet.discriminator import tail_widths
from realnet_core.methods.realnet.realnet import RealNet
from realnet_core.runtime import accelerate, adam, autocast, seed_generator, seeded_init
from realnet_core.viz import make_grid, write_png
from stages.common import StageContext, resume
from stages.inputs import category_split
from stages.loaders import SourceSteps, prefetch
from stages.methods.realnet.detector import BUNDLE, save_bundle
from stages.methods.realnet.select_features import read_selection
from stages.training_data import (
    TRAINING_FILES,
    NormalFeatures,
    load_training_data,
    paired_features,
    synth_kwargs,
    synthesis_key,
    training_fingerprint,
)
from storage.checkpoints import save_checkpoint
from storage.tables import write_table

NAME = "train_realnet"
VERSION = "5"
TABLES = ("train_log",)
FILES = TRAINING_FILES
MEMORY_HINT = "a smaller train.batch_size"
AUTHORS_DISC_HIDDEN = TrainConfig.model_fields["disc_hidden"].default  # runs at it keep their old keys


def key_config(cfg: Config) -> dict[str, Any]:
    # How often to save a resumable state changes no weight (test_faults: a resumed run is the same run);
    # the feature cache changes where the backbone's features are computed, not what they are. An unset
    # ema_rate, the authors' disc_hidden and raw RRS input stay out, so that those runs keep the keys from before
    # each existed.
    exclude = {"checkpoint_every", "feature_cache_mb"} | ({"ema_rate"} if cfg.train.ema_rate is None else set())
    exclude |= {"disc_hidden"} if cfg.train.disc_hidden == AUTHORS_DISC_HIDDEN else set()
    exclude |= {"rrs_input"} if cfg.train.rrs_input == "raw" else set()
    # The floor enters only where it changes a width (disc_hidden below 128), so the authors' width keeps its keys.
    floor_moot = tail_widths(cfg.train.disc_hidden, cfg.train.disc_min_width) == tail_widths(cfg.train.disc_hidden)
    exclude |= {"disc_min_width"} if floor_moot else set()
    exclude |= {"disc_leak"} if not cfg.train.disc_leak else set()
    return {"train": cfg.section("train", exclude=exclude),
            "synthesis": synthesis_key(cfg), "image_size": cfg.data.image_size}


fingerprint = training_fingerprint  # the training images, the backbone file and the synthesis sources


def build_model(cfg: Config, channels: list[int], selected: list[torch.Tensor]) -> RealNet:
    recon = {"channel_mult": tuple(cfg.train.recon_channel_mult), "num_res_blocks": cfg.train.recon_res_blocks}
    return RealNet(channels, selected, ratio=cfg.train.rrs_ratio, recon_kwargs=recon, disc_hidden=cfg.train.disc_hidden,
                   rrs_input=cfg.train.rrs_input, disc_min_width=cfg.train.disc_min_width,
                   disc_leak=cfg.train.disc_leak)


def train_step(net: RealNet, forward: Any, features: Any, opt: torch.optim.Optimizer, data: Any,
               gen: torch.Generator, cfg: Config, dev: torch.device, kwargs: dict, sources: Any = None,
               cache: NormalFeatures | None = None) -> torch.Tensor:
    """One training step (the stage's and the bench's): a synthetic batch, one backbone pass (over the
    anomalous rows only, given the normal images' ``cache``), RealNet forward and backward, an Adam step.
    Returns (total, recon, seg) on the device: reading it would wait for the GPU."""
    idx, normal, aug, mask = data.indexed_batch(cfg.train.batch_size, gen, cfg.synthesis.normal_fraction, kwargs,
                                                sources=sources)
    if cache is not None:
        feats_a, feats_n = cache.pair(features, idx, aug, mask, dev, cfg.runtime.bf16)
    else:
        feats_a, feats_n = paired_features(features, aug, normal, dev, cfg.runtime.bf16)
    with autocast(dev, cfg.runtime.bf16):
        out = forward(feats_a, feats_n, out_size=aug.shape[-2:])
        loss = net.loss(out, mask)
    opt.zero_grad(set_to_none=True)
    loss["total"].backward()
    opt.step()
    return torch.stack([loss[k].detach().float() for k in ("total", "recon", "seg")])


def normal_features(backbone: torch.nn.Module, features: torch.nn.Module, data: Any, cfg: Config,
                    dev: torch.device) -> NormalFeatures | None:
    """The training images' features, when they fit in ``train.feature_cache_mb``; else None (each step
    passes its normal images through the backbone again)."""
    limit = cfg.train.feature_cache_mb * 2**20
    if not limit or NormalFeatures.nbytes(backbone, data.images) > limit:
        return None
    return NormalFeatures(features, data.images, dev, cfg.runtime.bf16, batch_size=2 * cfg.train.batch_size)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, dev = ctx.cfg.train, ctx.device
    split = category_split(ctx.cfg, ctx.dataset, ctx.category)
    check_test_files(split)
    backbone = build_backbone(ctx.cfg.backbone.name, ctx.cfg.backbone.weights).to(dev)
    selected = read_selection(ctx.upstream_path("select_features"))
    with seeded_init(cfg.seed, ctx.dataset, ctx.category, "train_realnet", "init"):
        net = build_model(ctx.cfg, list(backbone.channels), selected).to(dev)
    opt = adam(net.parameters(), cfg.lr, dev)
    # BatchNorm's running statistics are copied from the trained network (use_buffers=False): they are an
    # average already.
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_rate)) if cfg.ema_rate else None
    features, forward = accelerate(backbone, ctx.cfg, dev), accelerate(net, ctx.cfg, dev)
    data = load_training_data(ctx, split, augmented=True)
    cache = normal_features(backbone, features, data, ctx.cfg, dev)
    gen = seed_generator(cfg.seed, ctx.dataset, ctx.category, "train_realnet")
    steps_per_epoch = cfg.steps_per_epoch or max(1, math.ceil(len(data.images) / cfg.batch_size))
    kwargs = synth_kwargs(ctx.cfg)

    state_path, epoch, log = ctx.workdir / "train_state.pt", 0, []
    if state := resume(state_path, gen, model=net, opt=opt, **({"ema": ema} if ema else {})):  # after a kill
        epoch, log = int(state["epoch"]), list(state["log"])
    resumed_from = epoch  # recorded in the manifest: 0 for a fresh start

    total = cfg.epochs * steps_per_epoch
    seed = (cfg.seed, ctx.dataset, ctx.category, "train_realnet", "source")
    sources = prefetch(SourceSteps(data.source, cfg.batch_size, data.size, seed),
                       range(epoch * steps_per_epoch, total), dev, ctx.cfg.runtime.loader_workers)
    bar = ctx.progress(total, "train_realnet", unit="step")
    bar.update(epoch * steps_per_epoch)
    t0 = time.perf_counter()
    net.train()
    while epoch < cfg.epochs:
        pending = []  # each step's losses stay on the device: reading one would wait for the GPU
        for _ in range(steps_per_epoch):
            pending.append(train_step(net, forward, features, opt, data, gen, ctx.cfg, dev, kwargs, next(sources),
                                      cache))
            if ema is not None:
                ema.update_parameters(net)
            bar.update(1)
        sums = np.zeros(3)
        for step_losses in torch.stack(pending).cpu().numpy():
            sums += step_losses
        bar.set_postfix(loss=f"{sums[0] / steps_per_epoch:.4f}",
                        steps_s=f"{(bar.n - bar.initial) / (time.perf_counter() - t0):.2f}", refresh=False)
        epoch += 1
        mean = sums / steps_per_epoch
        # Plain floats: numpy scalars would make train_state.pt unloadable with weights_only=True.
        log.append({"epoch": epoch, "loss": float(mean[0]), "recon": float(mean[1]), "seg": float(mean[2])})
        if epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
            save_checkpoint({"model": net.state_dict(), "opt": opt.state_dict(), "rng": gen.get_state(),
                             "epoch": epoch, "log": log, **({"ema": ema.state_dict()} if ema else {})}, state_path)
    bar.close()

    kept = net if ema is None else ema.module
    _check_not_collapsed(ctx, kept, features, data, kwargs)
    save_bundle(ctx.workdir / BUNDLE, kept, ctx.cfg.backbone.name, ctx.cfg.backbone.weights, data.size)
    write_table(pd.DataFrame(log), ctx.workdir / "train_log.parquet")
    _synthetic_preview(ctx, data, kwargs)
    state_path.unlink(missing_ok=True)
    return {"epochs": epoch, "steps": epoch * steps_per_epoch, "final_loss": log[-1]["loss"] if log else None,
            "resumed_from_epoch": resumed_from}


class DiscriminatorCollapsed(RuntimeError):
    """train_realnet's discriminator gives one value everywhere: a layer's ReLU units all died in training."""


def _check_not_collapsed(ctx: StageContext, net: RealNet, features: Any, data: Any, kwargs: dict) -> None:
    """Refuse to save a model whose map is the same for every image of a synthetic batch (the preview's): it
    would score every image alike, and evaluate would report chance for a run that looks complete."""
    _, aug, _ = data.batch(8, seed_generator(0, "preview"), 0.0, kwargs)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        feats, _ = paired_features(features, aug, aug[:0], ctx.device, ctx.cfg.runtime.bf16)
        amap = net(feats, out_size=aug.shape[-2:])["anomaly_map"].float()
    net.train(was_training)
    # Zero padding can leave a fixed pattern at the borders, so compare images, not pixels.
    spread = float((amap - amap[:1]).abs().amax())
    if not spread >= 1e-3:  # NaN too
        raise DiscriminatorCollapsed(
            f"train_realnet {ctx.dataset}/{ctx.category}: the trained discriminator gives every image the same "
            f"map (largest difference {spread:.1e} over 8 synthetic anomalies): the ReLU units of one of its "
            f"layers died in training. No model was written. Rerun with another --set train.seed=N, "
            f"--set train.disc_leak=0.01, or a lower train.lr (now {ctx.cfg.train.lr:g}).")


def _synthetic_preview(ctx: StageContext, data, kwargs: dict) -> None:
    """What the model was trained on: synthetic anomalies (top) and their masks (bottom)."""
    gen = seed_generator(0, "preview")
    _, aug, mask = data.batch(8, gen, 0.0, kwargs)
    top = (aug.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    bottom = (mask.repeat(1, 3, 1, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    write_png(ctx.workdir / "synthetic_batch.png", make_grid(np.concatenate([top, bottom]), nrow=8))
