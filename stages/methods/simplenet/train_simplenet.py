"""SimpleNet's one stage: train the feature adaptor and the discriminator on normal training images.

Each step takes a batch of training images (an epoch is one shuffled pass, as the code's DataLoader), adapts
their aggregated features, adds Gaussian noise for the anomalous ones and steps both optimisers on the
truncated margin loss. No synthetic images: no diffusion, SIA or AFS stage. The backbone is frozen and the
code augments nothing (run.sh), so an image's aggregated features are the same at every step: they are
computed once, before the first step, and kept on the device (8 MB an image at 288 px and 1536 values).
Never looks at the test set: the weights kept are those of the last epoch (the authors' code keeps the
meta-epoch that scored best on the test set).
Outputs ``simplenet.pt`` and ``simplenet_train_log.parquet``; resumes from ``train_state.pt``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import pandas as pd
import torch

from realnet_core.config import Config
from realnet_core.data.check import check_test_files
from realnet_core.features.backbones import backbone_channels, build_backbone
from realnet_core.methods.simplenet import SimpleNet
from realnet_core.runtime import accelerate, for_inference, seed_generator, seeded_init
from stages.common import StageContext, resume
from stages.inputs import category_split, files_fingerprint, to_tensor, train_fingerprint, train_images
from stages.methods.simplenet.detector import BUNDLE, SimpleNetDetector, backbone_features, save_bundle
from storage.checkpoints import save_checkpoint
from storage.tables import write_table

NAME = "train_simplenet"
VERSION = "1"
TABLES = ("simplenet_train_log",)  # train_realnet writes train_log: one writer per table name
FILES = ("backbone.weights",)
MEMORY_HINT = "a smaller simplenet.batch_size or simplenet.image_size (each training image's features stay on the GPU)"


def image_size(cfg: Config) -> int:
    """The size SimpleNet trains and scores at: its own, else the dataset's."""
    return cfg.simplenet.image_size or cfg.data.image_size


def key_config(cfg: Config) -> dict[str, Any]:
    # How often to save a resumable state changes no weight: a resumed run is the same run.
    return {"simplenet": cfg.section("simplenet", exclude={"checkpoint_every", "image_size"}),
            "backbone": cfg.section("backbone"), "image_size": image_size(cfg)}


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    return ",".join([train_fingerprint(cfg, dataset, category), *files_fingerprint(cfg, FILES)])


def build_model(cfg: Config, channels: list[int] | None = None) -> SimpleNet:
    """The network of a config; ``channels`` are the backbone's four (by default from its name)."""
    s = cfg.simplenet
    channels = list(channels or backbone_channels(cfg.backbone.name))
    return SimpleNet([channels[layer - 1] for layer in s.layers], s.layers, patch_size=s.patch_size,
                     pretrain_dim=s.pretrain_embed_dimension, target_dim=s.target_embed_dimension,
                     adaptor_bias=s.adaptor_bias, hidden=s.dsc_hidden, noise_std=s.noise_std, margin=s.margin,
                     sigma=s.sigma)


def optimizers(net: SimpleNet, cfg: Config) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """The code's two: Adam for the discriminator, AdamW (its default weight decay) for the adaptor."""
    s = cfg.simplenet
    return (torch.optim.Adam(net.discriminator.parameters(), lr=s.dsc_lr, weight_decay=s.dsc_weight_decay),
            torch.optim.AdamW(net.adaptor.parameters(), lr=s.adaptor_lr))


def epoch_batches(n: int, batch_size: int, steps: int | None, gen: torch.Generator) -> list[torch.Tensor]:
    """Image indices of each step of one epoch: a shuffled pass, the last batch short (the code's loader);
    with a fixed step count, full batches taken round the shuffled order."""
    perm = torch.randperm(n, generator=gen)
    if steps is None:
        return list(perm.split(batch_size))
    return [perm[torch.arange(t * batch_size, (t + 1) * batch_size) % n] for t in range(steps)]


@torch.no_grad()
def aggregated_features(net: SimpleNet, features: Any, images: torch.Tensor, batch_size: int,
                        bf16: bool) -> torch.Tensor:
    """(N, 3, H, W) images -> (N, h * w, target_dim) locally aggregated features, ``batch_size`` at a time."""
    out = []
    for batch in images.split(batch_size):
        q, (h, w) = net.features(backbone_features(features, batch, bf16))
        out.append(q.reshape(len(batch), h * w, -1))
    return torch.cat(out)


def train_step(net: SimpleNet, q: torch.Tensor, opts: tuple[torch.optim.Optimizer, ...],
               noise: torch.Generator) -> torch.Tensor:
    """One step (the stage's and the bench's) on a batch's aggregated features (B, h * w, D): the loss,
    both optimisers. Returns (loss, p_true, p_fake) on the device: reading it would wait for the GPU."""
    out = net.loss(q.reshape(-1, q.shape[-1]), noise)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    out["total"].backward()
    for opt in opts:
        opt.step()
    return torch.stack([out[k].detach().float() for k in ("total", "p_true", "p_fake")])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, dev = ctx.cfg.simplenet, ctx.device
    split = category_split(ctx.cfg, ctx.dataset, ctx.category)
    check_test_files(split)  # evaluate reads it last: a broken test set fails before training
    size = image_size(ctx.cfg)
    images = to_tensor(train_images(split, size), dev)
    backbone = build_backbone(ctx.cfg.backbone.name, ctx.cfg.backbone.weights).to(dev)
    with seeded_init(cfg.seed, ctx.dataset, ctx.category, NAME, "init"):
        net = build_model(ctx.cfg, list(backbone.channels)).to(dev)
    opts = optimizers(net, ctx.cfg)
    features = accelerate(backbone, ctx.cfg, dev)
    q = aggregated_features(net, features, images, cfg.batch_size, ctx.cfg.runtime.bf16)
    del images, backbone, features  # only the features are read from here on
    feature_std = float(q.flatten(0, 1).std(0).mean())  # the scale the noise is drawn against
    gen = seed_generator(cfg.seed, ctx.dataset, ctx.category, NAME, "order")
    noise = seed_generator(cfg.seed, ctx.dataset, ctx.category, NAME, "noise", device=dev)
    steps_per_epoch = cfg.steps_per_epoch or math.ceil(len(q) / cfg.batch_size)

    state_path, epoch, log = ctx.workdir / "train_state.pt", 0, []
    if state := resume(state_path, gen, model=net, opt_dsc=opts[0], opt_adaptor=opts[1]):  # after a kill
        epoch, log = int(state["epoch"]), list(state["log"])
        noise.set_state(state["noise_rng"])
    resumed_from = epoch

    bar = ctx.progress(cfg.epochs * steps_per_epoch, NAME, unit="step")
    bar.update(epoch * steps_per_epoch)
    t0 = time.perf_counter()
    net.train()
    while epoch < cfg.epochs:
        pending = [train_step(net, q[idx.to(dev)], opts, noise)
                   for idx in epoch_batches(len(q), cfg.batch_size, cfg.steps_per_epoch, gen)]
        bar.update(len(pending))
        loss, p_true, p_fake = (float(v) for v in torch.stack(pending).mean(0).cpu())
        epoch += 1
        log.append({"epoch": epoch, "loss": loss, "p_true": p_true, "p_fake": p_fake})
        bar.set_postfix(loss=f"{loss:.4f}", steps_s=f"{(bar.n - bar.initial) / (time.perf_counter() - t0):.2f}",
                        refresh=False)
        if epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
            save_checkpoint({"model": net.state_dict(), "opt_dsc": opts[0].state_dict(),
                             "opt_adaptor": opts[1].state_dict(), "rng": gen.get_state(),
                             "noise_rng": noise.get_state(), "epoch": epoch, "log": log}, state_path)
    bar.close()

    if log and log[-1]["loss"] > 0.9:
        # Loss 1 means D scores normal and noisy features alike: the noise is lost in the features' spread.
        print(f"realnet: warning: {NAME} {ctx.dataset}/{ctx.category}: the discriminator did not separate the noisy "
              f"features from the normal ones (final loss {log[-1]['loss']:.2f}); the features' per-dimension std is "
              f"{feature_std:.3g}: raise simplenet.noise_std ({cfg.noise_std}) towards it, or train longer",
              file=sys.stderr)
    save_bundle(ctx.workdir / BUNDLE, net, ctx.cfg.backbone.name, ctx.cfg.backbone.weights, size)
    write_table(pd.DataFrame(log), ctx.workdir / "simplenet_train_log.parquet")
    state_path.unlink(missing_ok=True)
    return {"epochs": epoch, "steps": epoch * steps_per_epoch, "final_loss": log[-1]["loss"] if log else None,
            "feature_std": feature_std, "resumed_from_epoch": resumed_from}


def bench_train_step(cfg: Config, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """One training step as the stage repeats it (``realnet bench``), on random images and weights: the
    aggregated features of 4 batches of images are computed once, as the stage does, and cycled through."""
    s = cfg.simplenet
    backbone = build_backbone(cfg.backbone.name, "random").to(device)
    net = build_model(cfg, list(backbone.channels)).to(device).train()
    opts = optimizers(net, cfg)
    gen = torch.Generator().manual_seed(6)
    size = image_size(cfg)
    images = torch.rand(4 * s.batch_size, 3, size, size, generator=gen).to(device)
    q = aggregated_features(net, accelerate(backbone, cfg, device), images, s.batch_size, cfg.runtime.bf16)
    noise = seed_generator(0, "bench", device=device)
    batches = iter(())

    def step() -> torch.Tensor:
        nonlocal batches
        idx = next(batches, None)
        if idx is None:
            batches = iter(epoch_batches(len(q), s.batch_size, None, gen))
            idx = next(batches)
        return train_step(net, q[idx.to(device)], opts, noise)

    return step, {"batch": s.batch_size, "params": sum(p.numel() for p in net.parameters()),
                  "patches_per_image": q.shape[1]}


def random_detector(cfg: Config, device: torch.device) -> SimpleNetDetector:
    """The config's detector with random weights, as evaluate builds it (``realnet bench``: speed does not
    depend on the weights)."""
    backbone = for_inference(build_backbone(cfg.backbone.name, "random").to(device))
    net = for_inference(build_model(cfg, list(backbone.channels)).to(device))
    return SimpleNetDetector(accelerate(backbone, cfg, device), net, image_size(cfg), cfg.runtime.bf16)
