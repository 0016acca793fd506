"""A run's numbers do not depend on how busy the machine is: same config and seed, same metrics."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from reliability._helpers import newest, run_args, subprocess_env

# A CPU-bound process beside a run of two threads: the load that runtime.threads=auto must not adapt to
# (a thread count that followed the load would split float sums differently).
HOG = "import torch, time\na = torch.randn(384, 384)\nwhile True:\n    a = torch.tanh(a @ a * 1e-3)\n"


def _metrics(root) -> dict:
    row = pd.read_parquet(f"{root}/evaluate/demo/brick/{newest(root, 'evaluate')}/metrics.parquet").iloc[0]
    return {k: float(row[k]) for k in ("image_auroc", "pixel_auroc", "pro")}


def test_a_run_beside_a_cpu_hog_gives_the_same_metrics(realnet, demo_data, tmp_path):
    quiet = realnet(run_args(tmp_path / "quiet", demo_data, "brick", "runtime.threads=2"))
    assert quiet.rc == 0, quiet.stderr
    hog = subprocess.Popen([sys.executable, "-c", HOG], env=subprocess_env())
    try:
        busy = realnet(run_args(tmp_path / "busy", demo_data, "brick", "runtime.threads=2"), timeout=600)
    finally:
        hog.kill()
        hog.wait()
    assert busy.rc == 0, busy.stderr
    assert _metrics(tmp_path / "busy") == _metrics(tmp_path / "quiet")
