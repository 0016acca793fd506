"""Stage 2: generate the Synthetic Industrial Anomaly (SIA) images with SDAS into Zarr shards.

Each shard of ``sia.shard_images`` images is generated whole, from its own seed (base seed, category,
shard index), and recorded as done only after it is written: a killed run resumes at the first
missing shard and produces exactly the images an uninterrupted run would have. Outputs ``sia.zarr``
(``images`` uint8 (N, H, W, 3) as sampled, ``strength`` float32 (N,), provenance attributes and, with
``sia.match_tones``, the ``tone_curve`` that training applies to every image read) and ``preview.png``.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from realnet_core.config import Config
from realnet_core.runtime import accelerate, for_inference, seed_generator
from realnet_core.synthesis.tones import apply_tone_curve, channel_histograms, tone_curve
from realnet_core.viz import make_grid, write_png
from stages import diffusion_model
from stages.common import StageContext
from stages.inputs import category_split, files_fingerprint, to_tensor, train_images
from storage.arrays import (
    ShardProgress,
    create_image_array,
    create_scalar_array,
    open_image_array,
    verify_image_array,
    write_attrs,
    write_shard,
)

NAME = "generate_sia"
VERSION = "3"
TABLES: tuple[str, ...] = ()
FILES = ("sia.classifier_checkpoint",)
MEMORY_HINT = "a smaller sia.batch_size"


def key_config(cfg: Config) -> dict[str, Any]:
    # The classifier enters through its file's fingerprint, and only when it guides.
    unused = {"classifier_checkpoint"} if cfg.sia.guidance_scale > 0 else {"classifier_checkpoint", "guidance_scale"}
    return cfg.section("sia", exclude=unused)


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    return ",".join(files_fingerprint(cfg, FILES))  # the rest it depends on is in the diffusion model's key


def _classifier_cond(ctx: StageContext, class_index: int | None):
    cfg = ctx.cfg.sia
    if cfg.guidance_scale <= 0 or class_index is None:  # the config allows guidance only with classes
        return None
    from realnet_core.diffusion.classifier import create_classifier, make_cond_fn
    from storage.checkpoints import load_checkpoint, load_state_into

    clf = create_classifier(image_size=ctx.cfg.diffusion.image_size)
    load_state_into(clf, load_checkpoint(cfg.classifier_checkpoint), cfg.classifier_checkpoint)
    return make_cond_fn(for_inference(clf.to(ctx.device)), cfg.guidance_scale)  # the gradient is for the image


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.sia
    model, flags, cats = diffusion_model.load_ema(f"{ctx.upstream_path('train_diffusion')}/ema.pt", ctx.device)
    model = accelerate(model, ctx.cfg, ctx.device)
    class_index = cats.index(ctx.category) if flags.get("num_classes") else None
    cond_fn = _classifier_cond(ctx, class_index)
    size, n = flags["image_size"], cfg.num_images
    prior = flags.get("x0_range") is not None
    # The training images at the model's size, read once for the colour prior's bound and the tone curve.
    train = train_images(category_split(ctx.cfg, ctx.dataset, ctx.category), size) if prior or cfg.match_tones else None
    if prior:  # the colour prior also bounds each image's mean colour
        flags = {**flags, "mean_range": _mean_colour_range(train, flags)}
    zpath = ctx.workdir / "sia.zarr"
    # Both calls reopen what an interrupted run already made, keeping its finished shards.
    images = create_image_array(zpath, n, size, size, shard_images=cfg.shard_images)
    strengths = create_scalar_array(zpath, n, name="strength", block=cfg.shard_images)
    progress = ShardProgress(zpath, n, cfg.shard_images)
    shards, todo = progress.total, progress.pending()

    bar = ctx.progress(n, "generate_sia", unit="img")
    bar.update(n - sum(_shard_len(i, n, cfg.shard_images) for i in todo))
    t0, made, pending = time.perf_counter(), 0, None
    # Shards are written on a second thread while the GPU samples the next one: the sampling thread
    # never waits for the GPU, so the GPU never waits for the host (drawing noise, compressing).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sia-writer") as writer:
        for shard in todo:
            count = _shard_len(shard, n, cfg.shard_images)
            gen = seed_generator(cfg.seed, ctx.dataset, ctx.category, f"shard{shard}")
            batches, strs = [], []
            for start in range(0, count, cfg.batch_size):
                b = min(cfg.batch_size, count - start)
                s = _group_strengths(b, cfg.strength, gen)
                batches.append(_to_host(diffusion_model.sample_images(
                    model, flags, ctx.cfg.diffusion, b, s, gen, ctx.device, steps=cfg.sampling_steps,
                    class_index=class_index, ddim=cfg.ddim, cond_fn=cond_fn, bf16=ctx.cfg.runtime.bf16)))
                strs.append(s.numpy())
                made += b
                bar.update(b)
                bar.set_postfix(img_s=f"{made / (time.perf_counter() - t0):.2f}", refresh=False)
            if pending is not None:
                pending.result()  # one shard in flight: its errors surface here, and memory stays bounded
            lo = shard * cfg.shard_images
            pending = writer.submit(_store_shard, images, strengths, progress, shard, lo, batches, strs)
        if pending is not None:
            pending.result()
    bar.close()

    verify_image_array(zpath, n)
    group_attrs = {"config": ctx.cfg.section("sia"), "upstream": ctx.upstream["train_diffusion"].to_dict(),
                   "seed": cfg.seed, "dataset": ctx.dataset, "category": ctx.category}
    curve = _tone_curve(zpath, train, cfg.shard_images) if cfg.match_tones else None
    if curve is not None:
        group_attrs["tone_curve"] = curve.tolist()
    write_attrs(zpath, group_attrs)
    _preview(ctx, zpath, curve)
    return {"num_images": n, "image_size": size, "shards": shards}


def _tone_curve(zpath, train: np.ndarray, shard_images: int) -> np.ndarray:
    """sia.match_tones: the curve from all stored SIA's channel histograms, read shard by shard, to the
    training images' (at the SIA size)."""
    images = open_image_array(zpath)
    hist = sum(channel_histograms(np.asarray(images[lo: lo + shard_images]))
               for lo in range(0, images.shape[0], shard_images))
    return tone_curve(hist, channel_histograms(train))


def _mean_colour_range(train: np.ndarray, flags: dict[str, Any]) -> list[list[float]]:
    """Per channel, the lowest and highest mean colour of the category's training images (at the model's size),
    centred as the model was trained (in [-1, 1])."""
    imgs = to_tensor(train) * 2 - 1
    means = imgs.mean(dim=(2, 3)) - torch.tensor(flags.get("center", [0.0, 0.0, 0.0]))
    return [means.amin(dim=0).tolist(), means.amax(dim=0).tolist()]


# The authors' generation draws one strength per batch of 16 images; a batch of 64 samples four such groups.
STRENGTH_GROUP = 16


def _group_strengths(n: int, bounds: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """(n,) float32 strengths: one U(bounds) draw per group of STRENGTH_GROUP consecutive images."""
    groups = torch.empty(-(-n // STRENGTH_GROUP)).uniform_(*bounds, generator=gen)
    return groups.repeat_interleave(STRENGTH_GROUP)[:n].contiguous()


def _to_host(images: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event | None]:
    """Start copying a batch to pinned host memory; the event (on a GPU) says when it has arrived."""
    if images.device.type != "cuda":
        return images.cpu(), None
    host = torch.empty(images.shape, dtype=images.dtype, pin_memory=True)
    host.copy_(images, non_blocking=True)
    arrived = torch.cuda.Event()
    # On the stream of the images' own GPU, where the copy runs: a slot thread's current device may be another.
    arrived.record(torch.cuda.current_stream(images.device))
    return host, arrived


def _store_shard(images, strengths, progress: ShardProgress, shard: int, lo: int,
                 batches: list[tuple[torch.Tensor, torch.cuda.Event | None]], strs: list[np.ndarray]) -> None:
    for _, arrived in batches:
        if arrived is not None:
            arrived.synchronize()  # waits for this copy only, not for the batches queued after it
    values = np.concatenate(strs)
    strengths[lo: lo + len(values)] = values
    write_shard(images, shard, np.concatenate([host.numpy() for host, _ in batches]))
    progress.mark(shard)  # only now is the shard complete


def _shard_len(shard: int, n: int, per: int) -> int:
    return min(per, n - shard * per)


def _preview(ctx: StageContext, zpath, tones: np.ndarray | None) -> None:
    """Up to 32 images sorted by strength, captioned with s, as training sees them (after the tone curve)."""
    images = open_image_array(zpath)
    strength = np.asarray(open_image_array(zpath, name="strength")[:])
    pick = np.sort(np.random.default_rng(0).choice(len(strength), min(32, len(strength)), replace=False))
    pick = pick[np.argsort(strength[pick], kind="stable")]
    tiles = np.asarray(images.get_orthogonal_selection((pick,)))
    if tones is not None:
        tiles = apply_tone_curve(tiles, tones)
    write_png(ctx.workdir / "preview.png", make_grid(tiles, nrow=8, labels=[f"s={strength[i]:.2f}" for i in pick]))
