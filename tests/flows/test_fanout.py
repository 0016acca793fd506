"""GPU fan-out through the real graph walk, store and device pool, with fake devices and fake stages.

Two categories on a pool of two fake devices: the category chains run at the same time, each
stage holds one device for its whole run, and no device is ever held by two stages at once.
Submission mirrors the flow's thread-pool task runner: one thread per task, waiting on its upstream.
"""

from __future__ import annotations

import threading
import time
import types
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

import stages.common
from flows.device_slots import shared_pool
from flows.graph import walk
from flows.plan import make_config, run_stage_now
from stages import dag


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: dict[str, str] = {}  # device -> "category/stage"
        self.peak = 0
        self.log: list[tuple[str, str, str]] = []
        self.threads: list[tuple[str, str]] = []

    def stage(self, name: str) -> types.ModuleType:
        mod = types.ModuleType(f"fake_{name}")
        mod.NAME, mod.VERSION = name, "fake-1"
        mod.key_config = lambda cfg: {}
        mod.fingerprint = lambda cfg, ds, cat: ""

        def run(ctx):
            dev, who = str(ctx.device), f"{ctx.category}/{name}"
            with self.lock:
                assert dev not in self.held, f"{dev} held by {self.held[dev]} and {who}"
                self.held[dev] = who
                self.peak = max(self.peak, len(self.held))
                self.log.append((ctx.category, name, dev))
                self.threads.append((dev, threading.current_thread().name))
            time.sleep(0.15)
            (ctx.workdir / "out.txt").write_text(who)
            with self.lock:
                del self.held[dev]
            return {}

        mod.run = run
        return mod


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(dag, "MODULES", {name: rec.stage(name) for name in dag.ORDER})
    # fake device names: let execute hand them to the stage instead of asking torch for CUDA
    monkeypatch.setattr(stages.common, "resolve_device", lambda name: name)
    return rec


def _run_graph(cfg, root: str, devices: list[str]) -> dict:
    with ThreadPoolExecutor(max_workers=16) as pool:
        def submit(stage, ds, cat, ups: dict[str, Future]) -> Future:
            def task():
                refs = {u: f.result() for u, f in ups.items()}
                return run_stage_now(stage, cfg, root, ds, cat, refs, False, devices)
            return pool.submit(task)

        futures = walk(cfg, [("demo", "brick"), ("demo", "grass")], submit)
        return {k: f.result() for k, f in futures.items()}


def test_two_categories_on_two_devices_run_at_once_one_stage_per_device(recorder, tmp_path):
    cfg = make_config("demo", [], None, None)
    devices = ["fakegpu:0", "fakegpu:1"]
    results = _run_graph(cfg, str(tmp_path), devices)

    assert len(results) == 12 and {r["status"] for r in results.values()} == {"ran"}
    assert recorder.peak == 2 and shared_pool(devices).peak == 2
    assert {dev for _, _, dev in recorder.log} == set(devices)
    # submitted from 16 task threads, yet every stage ran on its device's one compute thread (flows/device_slots.py)
    assert set(recorder.threads) == {(dev, f"compute-{dev}") for dev in devices}
    # each category's chain still runs in dependency order
    for cat in ("brick", "grass"):
        assert [s for c, s, _ in recorder.log if c == cat] == dag.active(cfg)


def test_one_device_runs_the_same_graph_one_stage_at_a_time(recorder, tmp_path):
    cfg = make_config("demo", [], None, None)
    results = _run_graph(cfg, str(tmp_path), ["fakecpu"])
    assert len(results) == 12
    assert recorder.peak == 1


def test_dataset_scoped_diffusion_is_built_once_and_shared(recorder, tmp_path):
    cfg = make_config("demo", ["diffusion.scope=dataset"], None, None)
    results = _run_graph(cfg, str(tmp_path), ["fakegpu:2", "fakegpu:3"])
    assert [s for _, s, _ in recorder.log].count("train_diffusion") == 1
    diffusion = {results[("demo", c, "train_diffusion")]["key"] for c in ("brick", "grass")}
    assert len(diffusion) == 1


def test_a_failed_stage_is_reported_once_and_the_stages_it_held_up_are_counted(monkeypatch):
    from prefect.exceptions import UnfinishedRun

    from flows import pipeline

    def done(value=None, exc=None) -> Future:
        fut = Future()
        fut.set_exception(exc) if exc else fut.set_result(value)
        return fut

    pending = "Run is in PENDING state, its result is not available."
    futures = {
        ("demo", "grass", "train_diffusion"): done({"status": "ran"}),
        ("demo", "brick", "train_diffusion"): done(exc=ValueError("broken weights")),
        ("demo", "brick", "generate_sia"): done(exc=UnfinishedRun(pending)),
        ("demo", "brick", "select_features"): done(exc=UnfinishedRun(pending)),
    }
    monkeypatch.setattr(pipeline, "walk", lambda cfg, targets, submit: futures)
    with pytest.raises(RuntimeError) as err:
        pipeline._submit_all(make_config("demo", [], None, None), [], "unused", set(), ["cpu"])
    assert str(err.value) == "train_diffusion demo/brick: broken weights (2 stage(s) downstream of it not run)"
