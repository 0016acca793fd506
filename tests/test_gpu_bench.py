"""docs/gpu/bench.sh, the GPU benchmark script, run here on the CPU with the demo profile.

A broken script costs a GPU run its measurements, so these tests check its plumbing: bench reports, the
summary table, the deadline, and few files in $OUT.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_sh(tmp_path: Path, *args: str, deadline: int = 300) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PROFILE": "demo", "QUICK": "1", "PY": sys.executable,
           "OUT": str(out), "DEADLINE": str(deadline), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", "docs/gpu/bench.sh", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    return proc, out


def test_a_phase_reports_its_numbers_in_few_files(tmp_path):
    proc, out = bench_sh(tmp_path, "inference", "--set", "evaluate.batch_size=3")

    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.txt").read_text()
    assert "inference_images_per_s_batched" in summary and "targets are for the paper profile" in summary
    assert "MISSED" not in summary and "met (" not in summary
    assert proc.stdout.rstrip().endswith(summary.rstrip())  # printed last, where a reader of the log looks
    assert sorted(p.name for p in out.iterdir()) == ["bench.tar.gz", "summary.txt"]
    with tarfile.open(out / "bench.tar.gz") as tar:
        assert {"bench/inference.json", "bench/inference.log", "bench/gpu.txt"} <= set(tar.getnames())
        report = json.load(tar.extractfile("bench/inference.json"))
    assert report["inference_batch"] == 3  # arguments after the phase reach its benches


def test_steps_past_the_deadline_are_skipped_and_said_so(tmp_path):
    proc, out = bench_sh(tmp_path, "memory", deadline=5)

    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.txt").read_text()
    assert all(f"{step}: skipped" in summary for step in ("memory_model", "diffusion", "diffusion_ckpt"))
    assert "diffusion_train_steps_per_s" not in summary


def test_an_unknown_phase_is_an_error(tmp_path):
    proc, _ = bench_sh(tmp_path, "sai")

    assert proc.returncode == 2 and "usage: bench.sh" in proc.stderr


def test_the_summary_judges_paper_profile_reports_against_issue_7s_targets(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_summary", ROOT / "docs/gpu/summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    meta = {"device_name": "NVIDIA H200", "torch_version": "2.11.0", "profile": "paper", "errors": {}}
    (tmp_path / "sia.json").write_text(json.dumps({**meta, "sia_images_per_s": 8.5}))
    (tmp_path / "inference.json").write_text(json.dumps({**meta, "inference_images_per_s_batched": 250.0,
                                                          "inference_batch1_peak_cuda_mb": 3900.0}))
    (tmp_path / "stages.log").write_text("killed at its time limit\n")  # ran, but left no report

    summary.main(tmp_path)
    lines = capsys.readouterr().out.splitlines()

    def row(key: str) -> str:
        return next(line for line in lines if key in line)

    assert row("sia_images_per_s").endswith("met (>= 8)")
    assert row("inference_images_per_s_batched").endswith("MISSED (>= 300)")
    assert row("inference_batch1_peak_cuda_mb").endswith("met (<= 4096)")
    assert row("stages ").endswith("no report (cut off?): see stages.log")
    assert not any(line.startswith("diffusion") for line in lines)  # never started, never asked for
