"""The demo through prefect-ray's RayTaskRunner on a local, CPU-only Ray instance.

Runs `realnet run --set runtime.task_runner=ray` as a user would: the flow starts its own local
Ray (no dashboard), every stage runs as a Ray task in a Ray worker process, and the artifacts
land in the shared root where the driver reads the metrics back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from storage.tables import load

REPO = Path(__file__).resolve().parents[2]
STAGES = ["train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate", "evaluate"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.prefect,
    pytest.mark.skipif(importlib.util.find_spec("prefect_ray") is None or importlib.util.find_spec("ray") is None,
                       reason="the ray extra is not installed: pip install -e '.[ray]'"),
]


@pytest.fixture
def ray_tmp():
    """Ray's session folder: short, because its AF_UNIX socket paths must stay under 108 bytes."""
    path = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_demo_runs_every_stage_as_a_ray_task(tmp_path, tiny_overrides, ray_tmp):
    artifacts = tmp_path / "artifacts"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RAY_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect_home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               REALNET_DEBUG="1", RAY_USAGE_STATS_ENABLED="0", RAY_TMPDIR=ray_tmp)
    # Relative paths on purpose: Ray workers run elsewhere, so the flow must make them absolute.
    cmd = [sys.executable, "-m", "flows.cli", "run", "--json", "--category", "brick", "--category", "grass",
           "--artifacts", os.path.relpath(artifacts, REPO), "--set", "runtime.task_runner=ray"]
    for o in tiny_overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    summary = json.loads(proc.stdout[proc.stdout.find('{\n  "profile"'):])

    assert sorted((r["category"], r["stage"]) for r in summary["stages"]) == sorted(
        (c, s) for c in ("brick", "grass") for s in STAGES)
    assert {r["status"] for r in summary["stages"]} == {"ran"}
    assert all(Path(r["path"]).is_absolute() and (Path(r["path"]) / "manifest.json").is_file()
               for r in summary["stages"])
    # the flow went through the Ray task runner, which started (and later stopped) its own Ray
    assert "Creating a local Ray instance" in proc.stderr + proc.stdout

    metrics = load("metrics", str(artifacts))
    assert sorted(metrics["category"]) == ["brick", "grass"]
    assert metrics[["image_auroc", "pixel_auroc", "pro"]].notna().all().all()
