"""Stage 1: train the SDAS diffusion model on the normal training images.

Scope ``category`` trains one unconditional model per category; scope ``dataset`` trains one
class-conditional model per dataset, as the authors' code does. Outputs: ``ema.pt`` (EMA weights and
the flags to rebuild the UNet), ``loss_log.parquet`` and ``samples.png`` (rows s = 0, 0.1, 0.2).
A kill resumes from ``train_state.pt``, written every ``diffusion.checkpoint_every`` steps.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from realnet_core.config import Config, DiffusionConfig
from realnet_core.data.check import check_test_files
from realnet_core.diffusion.gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from realnet_core.diffusion.unet import set_grad_checkpoint
from realnet_core.runtime import accelerate, adam, autocast, seed_generator, seeded_init, to_device
from realnet_core.viz import make_grid, write_png
from stages import diffusion_model
from stages.common import DATASET_SCOPE, StageContext, resume
from stages.inputs import (
    category_split,
    files_fingerprint,
    present_categories,
    to_tensor,
    train_fingerprint,
    train_images,
)
from storage.checkpoints import save_checkpoint
from storage.tables import write_table

NAME = "train_diffusion"
VERSION = "2"
TABLES = ("loss_log",)
FILES = ("diffusion.init_checkpoint",)
MEMORY_HINT = (
    "runtime.grad_checkpoint=true (same gradients, about 16% slower),"
    " or a smaller diffusion.batch_size with a larger diffusion.grad_accum (same effective batch)"
)


def dataset_scoped(cfg: Config) -> bool:
    return cfg.diffusion.scope == "dataset"


def key_config(cfg: Config) -> dict[str, Any]:
    # How often to save a resumable state changes no weight (test_faults: a resumed run is the same run).
    return cfg.section("diffusion", exclude={"checkpoint_every"})


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    cats = present_categories(cfg, dataset) if dataset_scoped(cfg) else [category]
    return ",".join([*(train_fingerprint(cfg, dataset, cat) for cat in cats), *files_fingerprint(cfg, FILES)])


def _training_set(ctx: StageContext) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """Images in [-1, 1] and, for the dataset scope, the class index of each image."""
    cfg, size = ctx.cfg, ctx.cfg.diffusion.image_size
    cats = present_categories(cfg, ctx.dataset) if dataset_scoped(cfg) else [ctx.category]
    images, labels = [], []
    for i, cat in enumerate(cats):
        split = category_split(cfg, ctx.dataset, cat)
        if not dataset_scoped(cfg):  # a shared model must not fail for one category's test files
            check_test_files(split)
        imgs = train_images(split, size)
        images.append(imgs)
        labels.append(np.full(len(imgs), i))
    x = to_tensor(np.concatenate(images)) * 2 - 1
    y = torch.from_numpy(np.concatenate(labels)).long() if dataset_scoped(cfg) else None
    return x, y, cats


def _color_prior(data: torch.Tensor, enabled: bool) -> tuple[list[float], list[list[float]] | None]:
    """Mean colour to centre on, and the per-channel range of the centred data (see diffusion.color_prior)."""
    if not enabled:
        return [0.0, 0.0, 0.0], None
    center = data.mean(dim=(0, 2, 3))
    centred = data - center.view(1, 3, 1, 1)
    return center.tolist(), [centred.amin(dim=(0, 2, 3)).tolist(), centred.amax(dim=(0, 2, 3)).tolist()]


def run(ctx: StageContext) -> dict[str, Any]:
    cfg, dev = ctx.cfg.diffusion, ctx.device
    data, labels, cats = _training_set(ctx)
    center, x0_range = _color_prior(data, cfg.color_prior)
    data = data - torch.tensor(center).view(1, 3, 1, 1)
    flags = diffusion_model.unet_flags(cfg, num_classes=len(cats) if labels is not None else None)
    # A dataset-scoped model is one artifact for every category: its seeds must not depend on which
    # category's task happened to build it.
    slot = DATASET_SCOPE if labels is not None else ctx.category
    with seeded_init(cfg.seed, ctx.dataset, slot, "train_diffusion", "init"):
        model = diffusion_model.build_unet(flags).to(dev)
    if cfg.init_checkpoint:
        diffusion_model.load_init(model, cfg.init_checkpoint)
    ema = copy.deepcopy(model).requires_grad_(False)
    set_grad_checkpoint(model, ctx.cfg.runtime.grad_checkpoint)
    forward = accelerate(model, ctx.cfg, dev)
    opt = adam(model.parameters(), cfg.lr, dev)
    diffusion = GaussianDiffusion(get_named_beta_schedule(cfg.noise_schedule, cfg.diffusion_steps))
    gen = seed_generator(cfg.seed, ctx.dataset, slot, "train_diffusion")

    state_path, step, log = ctx.workdir / "train_state.pt", 0, []
    if state := resume(state_path, gen, model=model, ema=ema, opt=opt):  # after a kill
        step, log = int(state["step"]), list(state["log"])
    resumed_from = step  # recorded in the manifest: 0 for a fresh start

    bar = ctx.progress(cfg.steps, "train_diffusion", unit="step")
    bar.update(step)
    t0, n = time.perf_counter(), len(data)
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # steps whose numbers are still on the device

    def flush() -> None:
        # Reading a GPU number waits for the GPU, so the log is read in batches, not every step: in
        # between, the host prepares the next batches while the GPU works.
        for s, loss, norm in pending:
            log.append({"step": s, "loss": float(loss), "grad_norm": float(norm)})
        pending.clear()
        if log:
            rate = (bar.n - bar.initial) / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{log[-1]['loss']:.4f}", steps_s=f"{rate:.2f}", refresh=False)

    while step < cfg.steps:
        total, grad_norm = train_step(model, forward, ema, opt, diffusion, data, labels, gen, cfg,
                                      ctx.cfg.runtime.bf16, dev)
        step += 1
        pending.append((step, total, grad_norm))
        bar.update(1)
        if len(pending) >= 25 or step % cfg.checkpoint_every == 0 or step == cfg.steps:
            flush()
        if step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                             "rng": gen.get_state(), "step": step, "log": log}, state_path)
    bar.close()

    save_checkpoint({"flags": flags, "categories": cats, "center": center, "x0_range": x0_range,
                     "ema": ema.state_dict()}, ctx.workdir / "ema.pt")
    write_table(pd.DataFrame(log), ctx.workdir / "loss_log.parquet")
    _sample_grid(ctx, ema, {**flags, "center": center, "x0_range": x0_range}, cats)
    state_path.unlink(missing_ok=True)
    return {"steps": step, "final_loss": float(np.mean([r["loss"] for r in log[-50:]])) if log else None,
            "categories": cats, "train_images": int(n), "resumed_from_step": resumed_from}


def train_step(model: torch.nn.Module, forward: Any, ema: torch.nn.Module, opt: torch.optim.Optimizer,
               diffusion: GaussianDiffusion, data: torch.Tensor, labels: torch.Tensor | None, gen: torch.Generator,
               cfg: DiffusionConfig, bf16: bool, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step (the stage's and the bench's): ``grad_accum`` batches drawn from the host images,
    the hybrid loss under autocast, backward, clip, Adam and the EMA update. Returns (loss, grad norm) on the
    device: reading them would wait for the GPU."""
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=dev)
    for _ in range(cfg.grad_accum):
        idx = torch.randint(0, len(data), (cfg.batch_size,), generator=gen)
        x0 = to_device(data[idx], dev)
        t = to_device(torch.randint(0, cfg.diffusion_steps, (cfg.batch_size,), generator=gen), dev)
        noise = to_device(torch.randn(x0.shape, generator=gen), dev)
        kwargs = {"y": to_device(labels[idx], dev)} if labels is not None else None
        with autocast(dev, bf16):
            losses = diffusion.training_losses(forward, x0, t, model_kwargs=kwargs, noise=noise)
        loss = losses["loss"].float().mean() / cfg.grad_accum
        loss.backward()
        total += loss.detach()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    _ema_update(ema, model, cfg.ema_rate)
    return total, grad_norm


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    # Multi-tensor kernels instead of two launches per parameter tensor (hundreds in the paper UNet),
    # with the same arithmetic as before, so existing artifact keys still mean the same weights.
    params = list(ema.parameters())
    torch._foreach_mul_(params, rate)
    torch._foreach_add_(params, [p.detach() for p in model.parameters()], alpha=1 - rate)


def _sample_grid(ctx: StageContext, ema: torch.nn.Module, flags: dict, cats: list[str]) -> None:
    """One row per strength s = 0, 0.1, 0.2 from the same starting noise, to see what s does.

    A dataset-scoped model draws column i from category i (cycling), whichever category built it.
    """
    strengths, per_row = (0.0, 0.1, 0.2), 8
    rows, labels = [], []
    classes = [i % len(cats) for i in range(per_row)] if flags.get("num_classes") else None
    for s in strengths:
        gen = seed_generator(ctx.cfg.diffusion.seed, "samples")
        imgs = diffusion_model.sample(ema, flags, ctx.cfg.diffusion, per_row, s, gen, ctx.device,
                                   class_index=classes, bf16=ctx.cfg.runtime.bf16)
        rows.append(imgs)
        labels += [f"{cats[c]} s={s:.1f}" for c in classes] if classes else [f"s={s:.1f}"] * per_row
    write_png(ctx.workdir / "samples.png", make_grid(np.concatenate(rows), nrow=per_row, labels=labels))
