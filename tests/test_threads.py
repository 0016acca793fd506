"""runtime.threads: auto is the machine's usable cores, whatever the load; a number pins it."""

from __future__ import annotations

import os

import pytest
import torch

from realnet_core.config import ConfigError, load_config
from realnet_core.runtime import cpu_threads, set_cpu_threads


def test_auto_is_every_core_this_process_may_use():
    assert cpu_threads("auto") == len(os.sched_getaffinity(0))
    assert cpu_threads(3) == 3


def test_set_cpu_threads_applies_the_count_to_torch():
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", ["0", "-2", "many", "1.5", "true"])
def test_a_bad_thread_count_is_an_error_naming_the_key(bad):
    with pytest.raises(ConfigError, match="runtime.threads"):
        load_config("demo", [f"runtime.threads={bad}"])


def test_stages_run_with_the_configured_threads(monkeypatch, tiny_overrides, tmp_path):
    from stages import dag
    from stages.common import execute
    from storage.store import Store

    seen = []
    cfg = load_config("demo", [*tiny_overrides, "runtime.threads=1"])
    stage = dag.MODULES["train_diffusion"]
    monkeypatch.setattr(stage, "run", lambda ctx: seen.append(torch.get_num_threads()) or {})
    before = torch.get_num_threads()
    try:
        execute(stage, cfg, Store(str(tmp_path)), "demo", "brick", {})
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


@pytest.mark.parametrize("given, expected", [(None, "3000"), ("300000", "300000")])
def test_entry_points_start_openmp_with_a_short_spin_unless_told_otherwise(given, expected):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given:
        env["GOMP_SPINCOUNT"] = given
    code = "import os, flows.cli; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected
