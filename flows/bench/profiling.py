"""Profiler traces behind ``realnet bench --trace DIR``: where one part's time goes.

For each traced part the folder gets ``<part>.trace.json`` (open it in Perfetto or chrome://tracing)
and ``<part>.ops.csv`` (torch's per-op table, most expensive first). The bench report keeps a summary
that answers "what bounds it": how much of the wall time the device was busy at all, and how that
busy time splits between matmul/convolution kernels (FLOP-bound, tensor cores on a GPU) and the
rest (normalisation, activations, copies: memory-bound). A busy fraction well under 1 means the
device waited on the host: Python overhead, kernel launches or the data pipeline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

# Kernel and op names of the FLOP-heavy work: cuDNN/CUTLASS convolutions and GEMMs, flash attention,
# and their aten entry points on a CPU.
_MATMUL = re.compile(r"conv|gemm|xmma|cutlass|fprop|dgrad|wgrad|flash|attention|mkldnn|aten::(?:mm|bmm|addmm|matmul)"
                     r"|cublas|sm\d+_", re.IGNORECASE)


# Set by run_bench(trace_dir=...): the timed calls are then also profiled, after their timing, so the
# profiler's own overhead never enters a number.
TRACE: dict[str, Any] = {"dir": None, "results": {}}


def sync(device: torch.device) -> None:
    """Wait for the device: a GPU result is only done, and timeable, once the GPU is."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def op_table(prof: Any, device: torch.device) -> pd.DataFrame:
    """One row per op or kernel: calls, self CPU ms, self device ms; sorted by where the time went."""
    rows = []
    for e in prof.key_averages():
        device_us = getattr(e, "self_device_time_total", 0.0) or 0.0
        rows.append({"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": device_us / 1e3})
    table = pd.DataFrame(rows, columns=["op", "calls", "self_cpu_ms", "self_device_ms"])
    by = "self_device_ms" if device.type == "cuda" else "self_cpu_ms"
    return table.sort_values(by, ascending=False, ignore_index=True)


def summarize(table: pd.DataFrame, wall_ms: float, device: torch.device, top: int = 5) -> dict[str, Any]:
    """Busy fraction of the device, the matmul/conv share of the busy time and the top ops."""
    col = "self_device_ms" if device.type == "cuda" else "self_cpu_ms"
    busy = float(table[col].sum())
    heavy = float(table.loc[table["op"].str.contains(_MATMUL), col].sum())
    top_rows = table.head(top)
    return {
        "wall_ms": wall_ms,
        # On a CPU, intra-op threads overlap, so op time can exceed wall time: cap at 1.
        "device_busy_fraction": min(1.0, busy / wall_ms) if wall_ms > 0 else 0.0,
        "matmul_conv_share": heavy / busy if busy > 0 else 0.0,
        "top_ops": "; ".join(f"{r.op[:60]} {100 * getattr(r, col) / busy:.0f}%" for r in top_rows.itertuples()
                             if busy > 0),
    }


def trace(name: str, fn: Callable[[], Any], device: torch.device, out_dir: str | Path,
          iters: int = 2) -> dict[str, Any]:
    """Run ``fn`` ``iters`` times under the profiler; write the trace and op table; return the summary.

    ``fn`` should already be warm (bench times it first): compilation and autotuning would
    otherwise fill the trace.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync(device)
        wall_ms = (time.perf_counter() - t0) * 1e3 / iters
    table = op_table(prof, device)
    table.to_csv(out / f"{name}.ops.csv", index=False)
    prof.export_chrome_trace(str(out / f"{name}.trace.json"))
    summary = summarize(table.assign(self_cpu_ms=table.self_cpu_ms / iters,
                                     self_device_ms=table.self_device_ms / iters), wall_ms, device)
    return {f"{name}_trace_{k}": v for k, v in summary.items()}
