"""The parts of ``realnet bench``: each times one stage's hot path on synthetic inputs.

Every part has the signature ``(cfg, device, quick, channels_last) -> dict`` and is registered in
:data:`BENCHES`; ``flows.bench.run`` runs them, records memory and assembles the report.
"""

from __future__ import annotations

import contextlib
import gc
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flows.bench.memory_model import bench_memory_model
from flows.bench.models import backbone as backbone_model
from flows.bench.models import prepare
from flows.bench.profiling import TRACE, sync, trace
from flows.bench.roofline import bench_roofline
from realnet_core.config import Config, load_config
from realnet_core.runtime import adam

TINY_PIPELINE = [
    "data.categories=[brick]", "data.image_size=64",
    "diffusion.steps=4", "diffusion.checkpoint_every=1000", "diffusion.sample_steps=2",
    "sia.num_images=8", "sia.shard_images=4", "sia.batch_size=4", "sia.sampling_steps=2",
    "afs.batches=2", "afs.batch_size=4",
    "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=4",
    "evaluate.overlays=2", "runtime.progress=false",
]


@dataclass(frozen=True)
class Budget:
    """Warm-up iterations, then at least ``min_iters`` timed ones, at most ``max_iters`` or ``seconds``."""

    warmup: int
    min_iters: int
    max_iters: int
    seconds: float


# Full runs time several iterations; quick runs (tests, smoke checks) one or two.
BUDGETS: dict[bool, dict[str, Budget]] = {
    False: {
        "sia": Budget(1, 1, 3, 60.0),
        "diffusion_train": Budget(2, 3, 20, 30.0),
        "afs": Budget(1, 2, 10, 20.0),
        "realnet_train": Budget(2, 3, 20, 30.0),
        "inference_batch1": Budget(3, 5, 100, 10.0),
        "inference_batched": Budget(2, 3, 20, 20.0),
        "loading": Budget(2, 5, 50, 10.0),
    },
    True: {
        "sia": Budget(1, 1, 1, 5.0),
        "diffusion_train": Budget(1, 1, 2, 3.0),
        "afs": Budget(1, 1, 2, 3.0),
        "realnet_train": Budget(1, 1, 2, 3.0),
        "inference_batch1": Budget(1, 2, 5, 2.0),
        "inference_batched": Budget(1, 1, 2, 3.0),
        "loading": Budget(1, 1, 3, 2.0),
    },
}

# SIA on a CPU at the paper's size costs ~2.2 TFLOP per image and step: time this many steps at batch 1
# and scale, rather than spend hours.
CPU_PAPER_SIA = {"batch": 1, "steps": 1}


# ---------------------------------------------------------------- small helpers


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def time_per_iter(fn: Callable[[], Any], device: torch.device, budget: Budget, label: str | None = None, *,
                  back_to_back: bool = False) -> float:
    """Mean seconds of one call of ``fn`` after ``budget.warmup`` untimed calls; traced too if asked.

    ``back_to_back``: time the calls as a stage makes them, queued one after another with the GPU
    synchronised only at the ends of the window. Waiting for the GPU after every call would add the
    idle gap of each restart, which a stage that never waits does not have. Otherwise each call is
    timed alone (a latency, as for inference at batch 1).
    """
    for _ in range(budget.warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < budget.max_iters:
        t0 = time.perf_counter()
        fn()
        if not back_to_back:
            sync(device)  # a result is only done once the GPU is
        times.append(time.perf_counter() - t0)
        if len(times) >= budget.min_iters and time.perf_counter() - start >= budget.seconds:
            break
    if back_to_back:
        sync(device)
        times = [(time.perf_counter() - start) / len(times)]
    if label and TRACE["dir"] is not None:
        TRACE["results"].update(trace(label, fn, device, TRACE["dir"], iters=1 if label == "sia" else 2))
    return sum(times) / len(times)


def _mb(nbytes: float) -> float:
    return round(nbytes / 2**20, 1)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def free_memory(device: torch.device) -> None:
    """Drop the previous part's tensors so that each part's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_cuda_mb(device: torch.device) -> float | None:
    return _mb(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _compile(module: torch.nn.Module, cfg: Config, device: torch.device) -> Any:
    # The stages' own rule (realnet_core.runtime.accelerate): compiled when runtime.compile is set (the paper
    # profile). Compilation happens in the warm-up calls, which are never timed.
    from realnet_core.runtime import accelerate

    return accelerate(module, cfg, device)


def _rand_images(n: int, size: int, device: torch.device, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen).to(device)


def unet_forward_flops(flags: dict[str, Any]) -> int:
    """FLOPs of one UNet forward at batch 1, counted on the meta device (shapes only, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from stages.diffusion_model import build_unet

    with torch.device("meta"):
        model = build_unet(flags)
        x = torch.empty(1, 3, flags["image_size"], flags["image_size"])
        t = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x, t)
    return int(counter.get_total_flops())


def forward_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn()
    return int(counter.get_total_flops())


# ---------------------------------------------------------------- parts


def bench_sia(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """SDAS sampling through the stage's own ``sample_images``, batches queued back to back as the stage does.

    The stage copies each batch to the host and writes it on another thread (generate_sia); the
    uint8 result is left on the GPU here.
    """
    from realnet_core.runtime import for_inference
    from stages.diffusion_model import build_unet, sample_images, unet_flags

    flags = unet_flags(cfg.diffusion)
    model = prepare(for_inference(build_unet(flags)), device, channels_last)
    batch, steps, notes = cfg.sia.batch_size, cfg.sia.sampling_steps, []
    if device.type == "cpu" and cfg.diffusion.image_size >= 128:
        batch, steps = CPU_PAPER_SIA["batch"], min(steps, CPU_PAPER_SIA["steps"])
        notes.append(f"sia: CPU at {cfg.diffusion.image_size} px: timed batch {batch} x {steps} step(s), "
                     f"scaled to {cfg.sia.sampling_steps} steps per image")
    elif quick and device.type == "cuda":
        steps = min(steps, 5)
        notes.append(f"sia: quick: timed {steps} steps, scaled to {cfg.sia.sampling_steps} steps per image")
    net, gen = _compile(model, cfg, device), torch.Generator().manual_seed(0)

    def run(n_steps: int) -> None:
        sample_images(net, flags, cfg.diffusion, batch, 0.15, gen, device, steps=n_steps, bf16=cfg.runtime.bf16)

    # Warm-up with 2 steps: the same kernels and shapes as the timed call, at a tenth of its cost.
    budget = BUDGETS[quick]["sia"]
    time_per_iter(lambda: run(2), device, Budget(budget.warmup, 1, 1, 0.0))
    seconds = time_per_iter(lambda: run(steps), device, Budget(0, budget.min_iters, budget.max_iters, budget.seconds),
                            "sia", back_to_back=True)
    per_image = seconds / batch * cfg.sia.sampling_steps / steps
    out = {"sia_images_per_s": 1.0 / per_image, "sia_batch": batch, "sia_steps_timed": steps,
           "sia_steps_per_image": cfg.sia.sampling_steps, "diffusion_unet_params": _params(model), "notes": notes}
    with contextlib.suppress(Exception):  # FLOPs are a nice-to-have; never fail the part for them
        flops = unet_forward_flops(flags)
        out["sia_gflop_per_forward"] = flops / 1e9
        out["sia_tflop_per_image"] = flops * cfg.sia.sampling_steps / 1e12
        out["sia_achieved_tflops"] = out["sia_tflop_per_image"] * out["sia_images_per_s"]
    return out


def bench_diffusion_train(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """Stage 1's own training step (``train_diffusion.train_step``) on random images held on the host."""
    import copy

    from realnet_core.diffusion.gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
    from realnet_core.diffusion.unet import set_grad_checkpoint
    from stages.diffusion_model import build_unet, unet_flags
    from stages.train_diffusion import train_step

    d = cfg.diffusion
    model = prepare(build_unet(unet_flags(d)), device, channels_last)
    ema = copy.deepcopy(model).requires_grad_(False)
    set_grad_checkpoint(model, cfg.runtime.grad_checkpoint)
    net, opt = _compile(model, cfg, device), adam(model.parameters(), d.lr, device)
    diffusion = GaussianDiffusion(get_named_beta_schedule(d.noise_schedule, d.diffusion_steps))
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(max(32, d.batch_size), 3, d.image_size, d.image_size, generator=gen) * 2 - 1

    def step() -> None:  # the stage reads its loss every 25 steps: no sync here
        train_step(model, net, ema, opt, diffusion, images, None, gen, d, cfg.runtime.bf16, device)

    seconds = time_per_iter(step, device, BUDGETS[quick]["diffusion_train"], "diffusion_train", back_to_back=True)
    return {"diffusion_train_steps_per_s": 1.0 / seconds, "diffusion_train_batch": d.batch_size,
            "diffusion_unet_params": _params(model)}


def bench_afs(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """Stage 3's own batch (``select_features.afs_step``): synthesize, backbone on both images, Eq. 4."""
    from realnet_core.methods.realnet.afs import AFSAccumulator
    from stages.methods.realnet.select_features import afs_step
    from stages.training_data import TrainingData

    backbone = backbone_model(cfg, device, channels_last)
    net, acc = _compile(backbone, cfg, device), AFSAccumulator(backbone.channels)
    data = TrainingData.random(cfg, device)
    gen, n = torch.Generator().manual_seed(3), cfg.afs.batch_size

    @torch.no_grad()
    def batch() -> None:
        afs_step(net, acc, data, gen, cfg, device)

    seconds = time_per_iter(batch, device, BUDGETS[quick]["afs"], "afs", back_to_back=True)
    return {"afs_seconds_per_1024_images": seconds * 1024 / n, "afs_batch": n, "backbone_params": _params(backbone)}


def bench_inference(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """The configured method's detector (``Method.bench_detector``): maps and image scores, as evaluate calls
    ``detector.score``; images already on the device (no decoding). The method's own ``<method>_inference``
    times the same call; this part adds the FLOPs and keeps the keys the GPU targets are written in."""
    from stages import methods

    detector = methods.of(cfg).bench_detector(cfg, device)
    batched = 64 if device.type == "cuda" else cfg.evaluate.batch_size
    gen, out = torch.Generator().manual_seed(5), {}
    for label, n in (("batch1", 1), ("batched", batched)):
        images = _rand_images(n, detector.image_size, device, gen)
        free_memory(device)  # the peak below is the weights plus this batch size's activations
        seconds = time_per_iter(lambda x=images: detector.score(x)[1].cpu(), device,
                                BUDGETS[quick][f"inference_{label}"], f"inference_{label}")
        out[f"inference_images_per_s_{label}"] = n / seconds
        peak = peak_cuda_mb(device)
        if peak is not None:
            out["inference_batch1_peak_cuda_mb" if n == 1 else "inference_peak_cuda_mb"] = peak
    out["inference_batch"] = batched
    with contextlib.suppress(Exception):
        one = _rand_images(1, detector.image_size, device, gen)
        out["inference_gflop_per_image"] = forward_flops(lambda: detector.score(one)) / 1e9
    return out


def bench_method_train(name: str, cfg: Config, device: torch.device, quick: bool,
                       channels_last: bool) -> dict[str, Any]:
    """A registered method's own training step (``Method.bench_train_step``), back to back as its stage runs."""
    from stages import methods

    step, info = methods.get(name).bench_train_step(cfg, device)
    seconds = time_per_iter(step, device, BUDGETS[quick]["realnet_train"], f"{name}_train", back_to_back=True)
    return {f"{name}_train_steps_per_s": 1.0 / seconds, **{f"{name}_train_{k}": v for k, v in info.items()}}


def bench_method_inference(name: str, cfg: Config, device: torch.device, quick: bool,
                           channels_last: bool) -> dict[str, Any]:
    """A registered method's detector (``Method.bench_detector``): maps and image scores, as evaluate calls
    ``detector.score``; images already on the device (no decoding)."""
    from stages import methods

    detector = methods.get(name).bench_detector(cfg, device)
    batched = 64 if device.type == "cuda" else cfg.evaluate.batch_size
    gen, out = torch.Generator().manual_seed(7), {}
    for label, n in (("batch1", 1), ("batched", batched)):
        images = _rand_images(n, detector.image_size, device, gen)
        free_memory(device)
        seconds = time_per_iter(lambda x=images: detector.score(x)[1].cpu(), device,
                                BUDGETS[quick][f"inference_{label}"], f"{name}_inference_{label}")
        out[f"{name}_inference_images_per_s_{label}"] = n / seconds
        peak = peak_cuda_mb(device)
        if peak is not None:
            out[f"{name}_inference_{label}_peak_cuda_mb"] = peak
    out[f"{name}_inference_batch"] = batched
    return out


def method_benches() -> dict[str, Callable[[Config, torch.device, bool, bool], dict[str, Any]]]:
    """``<method>_train`` and ``<method>_inference`` for each registered method that gives the bench hooks."""
    from functools import partial

    from stages import methods

    out = {}
    for m in methods.METHODS.values():
        if m.bench_train_step is not None:
            out[f"{m.name}_train"] = partial(bench_method_train, m.name)
        if m.bench_detector is not None:
            out[f"{m.name}_inference"] = partial(bench_method_inference, m.name)
    return out


def bench_cached_rerun(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """The tiny demo pipeline in a temporary folder: first run, then the fully cached rerun."""
    import flows.pipeline  # noqa: F401  (imports Prefect: seconds that belong to no run)
    from flows.runner import run_direct
    from realnet_core.data.demo import build_demo_dataset

    with tempfile.TemporaryDirectory(prefix="realnet-bench-") as tmp:
        root = build_demo_dataset(Path(tmp) / "demo_data", n_train=8, n_test_good=4, n_test_bad=4)
        extra = [f"data.roots.demo={root}", "data.dataset=demo", *TINY_PIPELINE]
        if device.type == "cpu":
            extra.append("runtime.gpus=0")  # run_direct uses every visible GPU otherwise
        tiny = load_config(cfg.profile, [*extra, f"runtime.device={device}"])
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            result = run_direct(tiny, artifacts=str(Path(tmp) / "artifacts"))
            runs.append((time.perf_counter() - t0, result))
    statuses = [row.get("status") for row in runs[1][1]["stages"]]
    out = {"pipeline_first_run_seconds": runs[0][0], "cached_rerun_seconds": runs[1][0],
           "cached_rerun_fraction": runs[1][0] / runs[0][0], "notes": []}
    if any(s != "reused" for s in statuses):
        out["notes"].append(f"cached_rerun: not every stage was reused: {statuses}")
    return out


# Test images as the datasets store them: MVTec-AD and MPDD PNGs are 700 to 1024 px, VisA JPEGs ~1500 px.
TEST_SOURCE_PX = {"demo": 128, "paper": 1024}


def _photo_like(n: int, size: int, seed: int) -> np.ndarray:
    """uint8 (n, size, size, 3): smooth colour fields plus fine noise. Pure noise would neither
    compress nor decode like real images; this sits between noise and a photo."""
    import cv2

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, max(2, size // 16), max(2, size // 16), 3), dtype=np.uint8)
    smooth = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in coarse])
    return np.clip(smooth.astype(np.int16) + rng.integers(-8, 9, smooth.shape), 0, 255).astype(np.uint8)


def bench_loading(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """Host-side loading in one process: train_realnet's SIA batch read from a sharded Zarr array, and
    evaluate's test-image decoding. One loader worker keeps a stage fed while these rates exceed the
    stage's own (``runtime.loader_workers`` runs that many)."""
    from realnet_core.viz import write_png
    from stages.loaders import SourceSteps, TestBatches
    from stages.training_data import StoredSIASource
    from storage.arrays import create_image_array, write_shard

    cpu, budget = torch.device("cpu"), BUDGETS[quick]["loading"]
    sia_px, shard = cfg.diffusion.image_size, min(cfg.sia.shard_images, 32 if quick else 256)
    src_px = TEST_SOURCE_PX.get(cfg.profile, 4 * cfg.data.image_size)
    n_test = cfg.evaluate.batch_size
    with tempfile.TemporaryDirectory(prefix="realnet-bench-") as tmp:
        zpath = Path(tmp) / "sia.zarr"
        array = create_image_array(zpath, 2 * shard, sia_px, sia_px, shard_images=shard)
        for i in range(2):
            write_shard(array, i, _photo_like(shard, sia_px, i))
        steps = SourceSteps(StoredSIASource(str(zpath)), cfg.train.batch_size, cfg.data.image_size, (0, "b"))
        step = iter(range(10**9))
        sia_s = time_per_iter(lambda: steps[next(step)], cpu, budget, "loading_sia")
        paths = []
        for i, img in enumerate(_photo_like(min(n_test, 4) if quick else n_test, src_px, 7)):
            paths.append(str(Path(tmp) / f"{i:03d}.png"))
            write_png(paths[-1], img)
        batches = TestBatches(paths, len(paths), cfg.data.image_size)
        test_s = time_per_iter(lambda: batches[0], cpu, budget, "loading_test")
    return {"loading_sia_batch_ms": 1e3 * sia_s, "loading_sia_batch": cfg.train.batch_size,
            "loading_test_images_per_s": len(paths) / test_s, "loading_test_source_px": src_px}


# ---------------------------------------------------------------- a busy CPU

# Another CPU-bound torch job, as on a laptop, a shared server or a CI runner.
_HOG = "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a * 1e-3)\n"
# A fresh process started the way `realnet` starts (flows first, then torch), timing stage 1's step.
_PROBE = """
import json, sys
import flows
import torch
from flows.bench.parts import bench_diffusion_train
from realnet_core.config import load_config
from realnet_core.runtime import set_cpu_threads
cfg = load_config(sys.argv[1], sys.argv[3:])
set_cpu_threads(cfg.runtime.threads)
print(json.dumps(bench_diffusion_train(cfg, torch.device("cpu"), sys.argv[2] == "quick", False)))
"""


def bench_busy_cpu(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """Stage 1's CPU training step alone, then beside a CPU-bound process: the slowdown a shared machine costs.

    Each measurement runs in a new process, so that OpenMP starts with the settings `realnet` gives it.
    """
    import json
    import subprocess

    args = [sys.executable, "-c", _PROBE, cfg.profile if cfg.profile in ("demo", "paper") else "demo",
            "quick" if quick else "full", f"runtime.threads={cfg.runtime.threads}",
            *(["diffusion.batch_size=4"] if quick else [])]

    def steps_per_s() -> float:
        out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=600).stdout
        return float(json.loads(out.strip().splitlines()[-1])["diffusion_train_steps_per_s"])

    quiet = steps_per_s()
    hog = subprocess.Popen([sys.executable, "-c", _HOG])
    try:
        busy = steps_per_s()
    finally:
        hog.kill()
        hog.wait()
    return {"busy_cpu_quiet_steps_per_s": quiet, "busy_cpu_hog_steps_per_s": busy, "busy_cpu_slowdown": quiet / busy,
            "busy_cpu_threads": cfg.runtime.threads}


BENCHES: dict[str, Callable[[Config, torch.device, bool, bool], dict[str, Any]]] = {
    "sia": bench_sia,
    "diffusion_train": bench_diffusion_train,
    "afs": bench_afs,
    "inference": bench_inference,
    "cached_rerun": bench_cached_rerun,
    "loading": bench_loading,
    "roofline": bench_roofline,
    "memory_model": bench_memory_model,
    "busy_cpu": bench_busy_cpu,
    **method_benches(),
}


