"""The table that ends docs/gpu/bench.sh: the numbers BENCHMARKS.md needs, against their targets.

Usage: python docs/gpu/summary.py DIR   (DIR holds the run's NAME.json reports and NAME.log files)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (report, key, target, higher is better); the targets are issue 7's, for the paper profile on one GPU.
ROWS: list[tuple[str, str, float | None, bool]] = [
    ("sia", "sia_images_per_s", 8.0, True),
    ("sia", "sia_achieved_tflops", None, True),
    ("sia", "sia_peak_cuda_mb", None, False),
    ("sia", "sia_wall_s", None, False),
    ("inference", "inference_images_per_s_batched", 300.0, True),
    ("inference", "inference_images_per_s_batch1", None, True),
    ("inference", "inference_batch1_peak_cuda_mb", 4096.0, False),
    ("memory_model", "inference_modelled_mb_batch1", None, False),
    ("inference", "inference_peak_cuda_mb", None, False),
    ("inference", "inference_wall_s", None, False),
    ("stages", "afs_seconds_per_1024_images", None, False),
    ("stages", "realnet_train_steps_per_s", None, True),
    ("stages", "realnet_train_peak_cuda_mb", None, False),
    ("memory_model", "realnet_train_modelled_gb", None, False),
    ("memory_model", "diffusion_train_modelled_gb", None, False),
    ("memory_model", "diffusion_train_modelled_gb_checkpointed", None, False),
    ("diffusion", "diffusion_train_steps_per_s", None, True),
    ("diffusion", "diffusion_train_peak_cuda_mb", None, False),
    ("diffusion_ckpt", "diffusion_train_steps_per_s", None, True),
    ("diffusion_ckpt", "diffusion_train_peak_cuda_mb", None, False),
    ("sia_trace", "sia_trace_device_busy_fraction", None, True),
    ("sia_trace", "sia_trace_matmul_conv_share", None, True),
    ("inference_trace", "inference_batched_trace_device_busy_fraction", None, True),
    ("inference_trace", "inference_batched_trace_matmul_conv_share", None, True),
    ("latency", "inference_images_per_s_batch1", None, True),
    ("latency", "inference_images_per_s_batched", 300.0, True),
]


def load(folder: Path, name: str) -> dict | None:
    path = folder / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # the step was skipped, or cut off before it printed its report


def verdict(value: float, target: float | None, higher: bool) -> str:
    if target is None:
        return ""
    met = value >= target if higher else value <= target
    return f"{'met' if met else 'MISSED'} ({'>=' if higher else '<='} {target:g})"


def main(folder: Path) -> None:
    reports = {name: load(folder, name) for name, *_ in ROWS}
    first = next((r for r in reports.values() if r), None)
    paper = bool(first) and first["profile"] == "paper"
    if first:
        print(f"device: {first['device_name']}, torch {first['torch_version']}, profile {first['profile']}"
              + ("" if paper else " (issue 7's targets are for the paper profile: not judged)"))
    # A step that ran but left no report was cut off; one never started is in skipped.txt, or was not asked for.
    for name in (n for n, r in reports.items() if r is None and (folder / f"{n}.log").exists()):
        print(f"{name:15s} no report (cut off?): see {name}.log")
    for name, key, target, higher in ROWS:
        report = reports[name] or {}
        if isinstance(report.get(key), int | float):
            judged = verdict(report[key], target if paper else None, higher)
            print(f"{name:15s} {key:46s} {report[key]:>10g}  {judged}")
    for name, report in reports.items():
        for part, error in (report or {}).get("errors", {}).items():
            print(f"{name:15s} error in {part}: {error}")
    tests = folder / "tests.log"
    if tests.exists():
        lines = [line for line in tests.read_text().splitlines() if line.strip()]
        print("tests:", lines[-1] if lines else "no output")
    skipped = folder / "skipped.txt"
    if skipped.exists():
        print(skipped.read_text().strip())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
