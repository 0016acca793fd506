"""Helpers of the reliability tests (imported as ``reliability._helpers``; fixtures are in conftest.py).

Every pipeline run here is a real, separate ``realnet`` process (see ``_child.py``) that a test can
SIGKILL at any moment.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from conftest import TINY

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STAGES = ["train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate", "evaluate"]

# The whole pipeline in ~10 s of one CPU core: the shared tiny config (tests/conftest.py), made smaller
# still, with a checkpoint every epoch so that a kill always has one to resume from. Later overrides win.
FAST = [
    *TINY,
    "diffusion.image_size=16",
    "diffusion.attention_resolutions=[]",
    "sia.batch_size=4",
    "train.checkpoint_every=1",
    "evaluate.batch_size=8",
    "runtime.device=cpu",
    "runtime.threads=1",  # 2 shared cores: more threads only fight each other
]


def sets(*overrides: str) -> list[str]:
    """FAST plus `overrides` (later ones win) as ``--set`` arguments."""
    out = []
    for item in [*FAST, *overrides]:
        out += ["--set", item]
    return out


def run_args(artifacts: Path, data: Path, category: str = "brick", *overrides: str) -> list[str]:
    """``realnet run --no-prefect`` arguments for one demo category with the FAST config."""
    return ["run", "--no-prefect", "--artifacts", str(artifacts), "--data-root", str(data),
            "--dataset", "demo", "--category", category, *sets(*overrides)]


# ---------------------------------------------------------------- child processes


@dataclass
class Child:
    """One ``realnet`` process: a forked multiprocessing.Process, or a Popen in exec mode."""

    proc: multiprocessing.Process | subprocess.Popen
    out: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        if isinstance(self.proc, subprocess.Popen):
            return self.proc.poll() is None
        return self.proc.is_alive()

    def kill(self) -> int:
        """SIGKILL the process and return its exit code (-9)."""
        self.proc.kill()
        return self.wait(30)

    def wait(self, timeout: float = 180) -> int:
        if isinstance(self.proc, subprocess.Popen):
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"realnet did not finish in {timeout} s; stderr:\n{self.stderr}") from None
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join()
            raise AssertionError(f"realnet did not finish in {timeout} s; stderr:\n{self.stderr}")
        return self.proc.exitcode

    @property
    def rc(self) -> int | None:
        return self.proc.returncode if isinstance(self.proc, subprocess.Popen) else self.proc.exitcode

    @property
    def stdout(self) -> str:
        return _read(self.out / "stdout.txt")

    @property
    def stderr(self) -> str:
        return _read(self.out / "stderr.txt")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


class Realnet:
    """Starts ``realnet`` child processes: ``start(args)`` returns at once, ``__call__`` waits."""

    def __init__(self, base: Path):
        self.base = base
        self.count = 0
        self.exec_mode = bool(os.environ.get("REALNET_RELIABILITY_EXEC"))
        if not self.exec_mode:
            from reliability._child import PRELOAD

            self.ctx = multiprocessing.get_context("forkserver")
            self.ctx.set_forkserver_preload(["reliability._child", *PRELOAD])

    def start(self, args: list[str], fault: str | None = None) -> Child:
        self.count += 1
        out = self.base / f"run{self.count:03d}"
        out.mkdir(parents=True)
        if self.exec_mode:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "_child.py"), str(out), fault or "", "--", *args],
                cwd=REPO, env=subprocess_env(),
            )
        else:
            from reliability._child import run_cli

            proc = self.ctx.Process(target=run_cli, args=(args, str(out), fault))
            proc.start()
        return Child(proc, out)

    def __call__(self, args: list[str], fault: str | None = None, timeout: float = 180) -> Child:
        child = self.start(args, fault)
        child.wait(timeout)
        return child


def console_script() -> list[str]:
    """The installed ``realnet`` command (falls back to ``python -m flows.cli``)."""
    exe = Path(sys.executable).with_name("realnet")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "flows.cli"]


def subprocess_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def wait_until(cond: Callable[[], bool], child: Child, timeout: float = 120, poll: float = 0.02) -> None:
    """Poll `cond` until it holds; fail if the child exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if not child.alive():
            raise AssertionError(f"realnet exited ({child.rc}) before the kill point; stderr:\n{child.stderr}")
        if time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"kill point not reached in {timeout} s")
        time.sleep(poll)


def one_line_error(child: Child) -> str:
    """The failure contract of the CLI: exit code 2 and exactly one ``realnet: error: ...`` line."""
    assert child.rc == 2, f"exit code {child.rc}; stderr:\n{child.stderr}"
    lines = [ln for ln in child.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("realnet: error: ")]
    assert len(errors) == 1, f"expected one error line, stderr:\n{child.stderr}"
    assert "Traceback" not in child.stderr, child.stderr
    return errors[0]


# ---------------------------------------------------------------- artifact inspection


def stage_dir(root: Path, stage: str, category: str = "brick") -> Path:
    return root / stage / "demo" / category


def complete(root: Path, stage: str, category: str = "brick") -> list[str]:
    """Keys of the complete artifacts of one stage, as `Store.list` sees them."""
    from storage.store import Store

    return [r.key for r in Store(str(root)).list(stage=stage, dataset="demo", category=category)]


def newest(root: Path, stage: str, category: str = "brick") -> str:
    from storage.store import Store

    ref = Store(str(root)).latest(stage, "demo", category)
    assert ref is not None, f"no complete {stage} artifact under {root}"
    return ref.key


def manifest(root: Path, stage: str, key: str | None = None, category: str = "brick") -> dict:
    """The manifest of `key`, or of the only complete artifact of the stage."""
    if key is None:
        keys = complete(root, stage, category)
        assert len(keys) == 1, f"{stage}: expected one complete artifact, found {keys}"
        key = keys[0]
    return json.loads((stage_dir(root, stage, category) / key / "manifest.json").read_text())


def scratch_dirs(root: Path, stage: str, category: str = "brick") -> list[Path]:
    """The persistent scratch folders (``.partial-<key>``) of a stage: progress of unfinished runs."""
    parent = stage_dir(root, stage, category)
    return sorted(parent.glob(".partial-*")) if parent.is_dir() else []


def lock_files(root: Path, stage: str, category: str = "brick") -> list[Path]:
    parent = stage_dir(root, stage, category)
    return sorted(parent.glob(".lock-*")) if parent.is_dir() else []


def manifests(root: Path) -> list[Path]:
    return sorted(root.rglob("manifest.json")) if root.exists() else []


def assert_only_complete_listed(root: Path) -> None:
    """Whatever a kill left behind, `Store.list` and `tables.load` see only folders with a manifest."""
    from storage.store import Store
    from storage.tables import load

    store = Store(str(root))
    listed = {(r.stage, r.category, r.key) for r in store.list()}
    on_disk = {(p.parts[-4], p.parts[-2], p.parts[-1]) for p in root.glob("*/*/*/*") if p.is_dir()}
    for stage, category, key in on_disk:
        folder = root / stage / "demo" / category / key
        # Hidden folders (scratch, staging, trash) never count, even holding a manifest.
        visible_and_complete = not key.startswith(".") and (folder / "manifest.json").is_file()
        assert ((stage, category, key) in listed) == visible_and_complete, folder
    for table in ("metrics", "scores", "train_log", "loss_log", "afs"):
        keys = set(load(table, str(root))["artifact_key"])
        assert keys <= {k for _, _, k in listed}, table
