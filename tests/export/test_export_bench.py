"""`realnet bench --part export`: images/s of every engine at batch 1 and 16, on a CPU."""

from __future__ import annotations

import math

import pytest
import torch

from flows.bench.run import METRICS, run_bench

pytestmark = pytest.mark.slow

TINY = ["data.image_size=64", "afs.dims=[16,24,48,96]", "train.recon_res_blocks=1", "runtime.threads=1"]


def test_bench_export_reports_every_engine_at_batch_1_and_16():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the plumbing, not the speed, on a shared CPU
    try:
        result = run_bench("demo", device="cpu", quick=True, overrides=TINY, parts=["export"])
    finally:
        torch.set_num_threads(threads)
    assert result["errors"] == {}
    assert len(METRICS["export"]) == 6  # torch, onnx and openvino, each at batch 1 and 16
    for key in (*METRICS["export"], "export_onnx_seconds", "export_openvino_seconds"):
        assert isinstance(result[key], int | float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["export_onnx_provider"] == "CPUExecutionProvider"
