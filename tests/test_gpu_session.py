"""docs/gpu/session.sh, the one device call of a GPU session, run here on the CPU with the demo profile.

A lent GPU has 15 minutes in all, so a broken script costs the session its measurements: these tests check
its plumbing (bench reports, the summary table, the deadline, at most 8 files back from $OUT).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def session(tmp_path: Path, *args: str, deadline: int = 300) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    env = {**os.environ, "DEVICE": "cpu", "PROFILE": "demo", "QUICK": "1", "PY": sys.executable,
           "OUT": str(out), "DEADLINE": str(deadline), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", "docs/gpu/session.sh", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    return proc, out


def test_a_phase_reports_its_numbers_in_few_files(tmp_path):
    proc, out = session(tmp_path, "inference", "--set", "evaluate.batch_size=3")

    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.txt").read_text()
    assert "inference_images_per_s_batched" in summary and "MISSED (>= 300)" in summary  # a CPU misses it
    assert proc.stdout.rstrip().endswith(summary.rstrip())  # the tool's reply shows the end of the output
    assert sorted(p.name for p in out.iterdir()) == ["session.tar.gz", "summary.txt"]  # the tool returns 8 at most
    with tarfile.open(out / "session.tar.gz") as tar:
        assert {"session/inference.json", "session/inference.log", "session/gpu.txt"} <= set(tar.getnames())
        report = json.load(tar.extractfile("session/inference.json"))
    assert report["inference_batch"] == 3  # arguments after the phase reach its benches


def test_steps_past_the_deadline_are_skipped_and_said_so(tmp_path):
    proc, out = session(tmp_path, "memory", deadline=5)

    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.txt").read_text()
    assert "diffusion: skipped" in summary and "diffusion_ckpt: skipped" in summary
    assert "diffusion_train_steps_per_s" not in summary


def test_an_unknown_phase_is_an_error(tmp_path):
    proc, _ = session(tmp_path, "sai")

    assert proc.returncode == 2 and "usage: session.sh" in proc.stderr
