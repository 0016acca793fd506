"""``realnet bench``: time every stage's hot path on synthetic inputs of a profile's sizes.

No dataset and no pretrained weights are needed: images are random, every network is randomly
initialised (speed does not depend on the weights) and the AFS selection is a random channel subset
of the configured width. Each measurement runs warm-up iterations first (excluded: cuDNN autotuning,
allocator growth, lazy initialisation), synchronises the GPU around every timed iteration and stops
at a per-part time budget, so the paper profile finishes in a few minutes on one H100.

Parts (``parts=``, in ``flows.bench.parts``): ``sia``, ``diffusion_train``, ``afs``, ``realnet_train``,
``inference``, ``roofline`` (SIA and inference under a roofline model, not timed), ``memory_model``
(training and inference memory counted without a GPU), ``loading`` (host-side image reading) and
``cached_rerun`` (the tiny demo pipeline run twice; demo profile only), ``busy_cpu`` (stage 1's CPU
step alone and beside another CPU-bound process, each in a fresh process), ``export`` (images/s of the model
exported to ONNX and OpenVINO beside PyTorch's, at batch 1 and 16; ``flows.bench.export``), and
``<method>_train`` and ``<method>_inference`` for each registered method with bench hooks
(``simplenet_train``, ``prn_inference``, ...). A part that fails records its error under ``errors`` and the
others still run, so one out-of-memory does not lose the whole report. Progress goes to stderr; the result
is a flat dict (plus ``notes`` and ``errors``).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from flows.bench.export import BATCHES, ENGINES, bench_export
from flows.bench.parts import BENCHES, free_memory, log, method_benches, peak_cuda_mb, peak_rss_mb
from flows.bench.profiling import TRACE
from realnet_core.config import Config, load_config
from realnet_core.runtime import resolve_device

PARTS: tuple[str, ...] = ("sia", "diffusion_train", "afs", "inference", "roofline", "memory_model",
                          "loading", "cached_rerun", "busy_cpu", "export", *method_benches())

# The throughput keys each part produces; tests and BENCHMARKS.md rely on these names.
METRICS: dict[str, tuple[str, ...]] = {
    "sia": ("sia_images_per_s",),
    "diffusion_train": ("diffusion_train_steps_per_s",),
    "afs": ("afs_seconds_per_1024_images",),
    "inference": ("inference_images_per_s_batch1", "inference_images_per_s_batched"),
    "roofline": ("sia_roofline_eager_images_per_s", "sia_roofline_ceiling_images_per_s",
                 "inference_roofline_eager_images_per_s", "inference_roofline_ceiling_images_per_s"),
    "memory_model": ("diffusion_train_modelled_gb", "diffusion_train_modelled_gb_checkpointed",
                     "realnet_train_modelled_gb", "inference_modelled_mb_batch1"),
    "loading": ("loading_sia_batch_ms", "loading_test_images_per_s"),
    "cached_rerun": ("pipeline_first_run_seconds", "cached_rerun_seconds"),
    "busy_cpu": ("busy_cpu_quiet_steps_per_s", "busy_cpu_hog_steps_per_s", "busy_cpu_slowdown"),
    "export": tuple(f"export_{engine}_images_per_s_batch{n}" for engine in ENGINES for n in BATCHES),
    # Each registered method's own parts (stages.common.Method's bench hooks), e.g. simplenet_train.
    **{part: (f"{part}_steps_per_s",) if part.endswith("_train") else
       (f"{part}_images_per_s_batch1", f"{part}_images_per_s_batched") for part in method_benches()},
}

# The tiny one-category pipeline whose cached rerun is timed (demo profile only).
# ---------------------------------------------------------------- metadata


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def metadata(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    return {
        "profile": cfg.profile, "device": str(device), "device_name": device_name(device),
        "torch_version": torch.__version__, "python_version": platform.python_version(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        # Other jobs on the same cores slow every CPU number down; the load average says how busy they were.
        "loadavg_1min_start": round(os.getloadavg()[0], 2),
        "bf16": cfg.runtime.bf16 and device.type == "cuda", "compile": cfg.runtime.compile,
        "channels_last": channels_last, "quick": quick,
        "image_size": cfg.data.image_size, "diffusion_image_size": cfg.diffusion.image_size,
        "backbone": cfg.backbone.name, "backbone_weights": "random (speed only)",
    }


# ---------------------------------------------------------------- driver


@contextlib.contextmanager
def _part(name: str, device: torch.device, result: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Time one part, record its peak CUDA memory, and turn a failure into an ``errors`` entry."""
    free_memory(device)
    log(f"{name} ...")
    t0 = time.perf_counter()
    box: dict[str, Any] = {}
    try:
        yield box
    except Exception as exc:  # one part's failure (e.g. out of memory) must not lose the others
        result["errors"][name] = f"{type(exc).__name__}: {exc}"
        log(f"{name} failed: {result['errors'][name]}")
        return
    finally:
        if device.type == "cuda":
            box.setdefault(f"{name}_peak_cuda_mb", peak_cuda_mb(device))
    result["notes"].extend(box.pop("notes", []))
    # Warm-up and compilation included: what a GPU run has to budget for, and what compile costs a stage.
    box[f"{name}_wall_s"] = time.perf_counter() - t0
    result.update(box)
    result.update(TRACE["results"])
    TRACE["results"] = {}
    shown = ", ".join(f"{k}={_fmt(box[k])}" for k in METRICS[name] if k in box)
    log(f"{name}: {shown} ({box[f'{name}_wall_s']:.1f} s)")


def _fmt(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _select_parts(cfg: Config, parts: list[str] | None, result: dict[str, Any]) -> list[str]:
    chosen = list(parts) if parts is not None else list(PARTS)
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown bench part {unknown[0]!r}; parts are: {', '.join(PARTS)}")
    if "cached_rerun" in chosen and cfg.profile != "demo":
        chosen.remove("cached_rerun")
        result["notes"].append("cached_rerun: skipped, it runs the demo pipeline (demo profile only)")
    return chosen


def run_bench(profile: str = "demo", device: str = "auto", quick: bool = False,
              overrides: list[str] | None = None, parts: list[str] | None = None,
              channels_last: bool = False, trace_dir: str | Path | None = None) -> dict[str, Any]:
    """Benchmark ``profile`` on ``device``; returns a flat dict of throughputs, memory and metadata.

    ``quick`` times one or two iterations per part; ``parts`` restricts to some of :data:`PARTS`;
    ``overrides`` are ``section.key=value`` config overrides (e.g. ``runtime.compile=true``);
    ``trace_dir`` also writes a profiler trace and op table of every timed loop there.
    """
    cfg = load_config(profile, overrides)
    dev = resolve_device(device if device != "auto" else cfg.runtime.device)
    result: dict[str, Any] = {**metadata(cfg, dev, quick, channels_last), "notes": [], "errors": {}}
    t0 = time.perf_counter()
    TRACE.update(dir=trace_dir, results={})
    try:
        for name in _select_parts(cfg, parts, result):
            with _part(name, dev, result) as box:
                box.update({**BENCHES, "export": bench_export}[name](cfg, dev, quick, channels_last))
    finally:
        TRACE.update(dir=None, results={})
    result["peak_rss_mb"] = peak_rss_mb()
    # None on a CPU: the key is always there, so reports have one shape.
    cuda_peaks = [v for k, v in result.items() if k.endswith("_peak_cuda_mb") and v is not None]
    result["peak_cuda_mb"] = max(cuda_peaks, default=0.0) if dev.type == "cuda" else None
    result["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
    result["bench_seconds"] = time.perf_counter() - t0
    return {k: _round(v) for k, v in result.items()}


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.4g}") if abs(value) < 1e4 else round(value, 1)
    return value
