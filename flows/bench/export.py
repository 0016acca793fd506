"""The bench's ``export`` part: images/s of the configured method's detector per engine (PyTorch, onnxruntime,
OpenVINO), at batch 1 and 16, through the same ``score`` that ``realnet predict`` calls.

The model has random weights (speed does not depend on them); it is exported to ONNX and OpenVINO in a
temporary folder (OpenVINO's converted from the ONNX graph), and each export's seconds are recorded too.
PyTorch and onnxruntime run on the bench's device (onnxruntime's CUDA provider where it is installed);
OpenVINO runs on the CPU. Images reach an exported engine through host memory, as in predict.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from flows.bench.parts import BUDGETS, _rand_images, free_memory, time_per_iter
from realnet_core.config import Config

BATCHES: tuple[int, ...] = (1, 16)
ENGINES: tuple[str, ...] = ("torch", "onnx", "openvino")


def _detectors(cfg: Config, device: torch.device) -> tuple[Any, Any]:
    """The configured method's detector (``Method.bench_detector``), eager, on ``device`` for PyTorch and on the
    CPU to export (the exporter traces plain modules). Speed does not depend on the weights, so the two need
    not share them."""
    from stages import methods

    eager = cfg.model_copy(deep=True)
    eager.runtime.compile = False
    method = methods.of(cfg)
    return method.bench_detector(eager, device), method.bench_detector(eager, torch.device("cpu"))


def bench_export(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    from stages.export.engines import load_engine
    from stages.export.write import export_detector

    out: dict[str, Any] = {}
    runners: dict[str, Any] = {}
    runners["torch"], cpu = _detectors(cfg, device)
    with tempfile.TemporaryDirectory(prefix="realnet-bench-export-") as tmp:
        for fmt in ("onnx", "openvino"):
            t0 = time.perf_counter()
            traced = Path(tmp) / "onnx" / "model.onnx" if fmt == "openvino" else None  # one trace for both
            export_detector(cpu, fmt, Path(tmp) / fmt, traced=traced)
            out[f"export_{fmt}_seconds"] = time.perf_counter() - t0
            runners[fmt] = load_engine(fmt, Path(tmp) / fmt, device)
        out["export_onnx_provider"] = runners["onnx"].provider
        gen = torch.Generator().manual_seed(7)
        for n in BATCHES:
            images = _rand_images(n, cfg.data.image_size, device, gen)
            budget = BUDGETS[quick]["inference_batch1" if n == 1 else "inference_batched"]
            for engine in ENGINES:
                free_memory(device)
                with torch.no_grad():
                    seconds = time_per_iter(lambda r=runners[engine], x=images: r.score(x)[1].cpu(), device, budget,
                                            f"export_{engine}_batch{n}")
                out[f"export_{engine}_images_per_s_batch{n}"] = n / seconds
        del runners
    return out
