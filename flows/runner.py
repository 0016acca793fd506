"""Entry points behind ``realnet run`` and ``realnet status``: through Prefect or in this process."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from flows.device_slots import visible_devices
from flows.graph import resolve_targets, summary_rows, walk
from realnet_core.config import Config, load_config
from realnet_core.data.registry import check_dataset
from stages import dag
from stages.common import stage_ref
from storage.store import Store

DEFAULT_ARTIFACTS = "artifacts"


def artifacts_root(artifacts: str | None) -> str:
    return artifacts or os.environ.get("REALNET_ARTIFACTS") or DEFAULT_ARTIFACTS


def make_config(profile: str, overrides: list[str] | None, dataset: str | None,
                data_roots: dict[str, str] | None) -> Config:
    for ds in [*(data_roots or {}), *([dataset] if dataset else [])]:
        check_dataset(ds)  # before the name becomes part of an override key
    extra = [f"data.roots.{ds}={root}" for ds, root in (data_roots or {}).items()]
    if dataset:
        extra.append(f"data.dataset={dataset}")
        if not any(o.startswith("data.categories=") for o in overrides or []):
            extra.append("data.categories=[]")  # the profile's categories belong to its own dataset
    return load_config(profile, [*extra, *(overrides or [])])


def ensure_demo_data(cfg: Config, targets: list[tuple[str, str]]) -> None:
    """The bundled datasets need no download: build the demo (or development) set where the config expects it."""
    from realnet_core.data.demo import build_demo_dataset
    from realnet_core.data.devset import build_dev_dataset

    bundled = {"demo": ("demo_data", build_demo_dataset), "dev": ("dev_data", build_dev_dataset)}
    for ds, (default, build) in bundled.items():
        if any(d == ds for d, _ in targets):
            root = Path(cfg.data.roots.get(ds, default))
            if not root.exists():
                # stderr: stdout carries `realnet run --json`, which must stay parseable.
                print(f"building the {ds} dataset in {root}", file=sys.stderr)
                build(root)


def run_pipeline(categories: list[str] | None = None, dataset: str | None = None,
                 data_roots: dict[str, str] | None = None, profile: str = "demo",
                 overrides: list[str] | None = None, rerun: list[str] | None = None,
                 artifacts: str | None = None, use_prefect: bool = True) -> dict[str, Any]:
    cfg = make_config(profile, overrides, dataset, data_roots)
    ensure_demo_data(cfg, resolve_targets(cfg, categories, dataset))
    if use_prefect:
        # The flow checks both again, but here a mistake fails before Prefect's server starts.
        dag.check_inputs(cfg)
        visible_devices(cfg.runtime.gpus, cfg.runtime.device)
        from flows.pipeline import realnet

        with _patient_ephemeral_server():
            return realnet(categories=categories, dataset=dataset, data_roots=data_roots, profile=profile,
                           overrides=overrides, rerun=rerun, artifacts=artifacts)
    return run_direct(cfg, categories, dataset, rerun, artifacts)


EPHEMERAL_STARTUP_TIMEOUT_S = 120


def _patient_ephemeral_server():
    """Settings for Prefect's temporary server, where the user has not set them.

    - Startup timeout 120 s instead of 20: a fresh PREFECT_HOME migrates its SQLite database on the
      first start, which on a busy two-core machine takes longer, and `realnet run` then failed
      before any stage ran.
    - No telemetry: on a machine without internet it logs an ERROR line in every run, which reads
      as if the pipeline had failed.
    """
    from prefect.settings import (
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates = {}
    if not os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EPHEMERAL_STARTUP_TIMEOUT_S
    if not os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED"):
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    return temporary_settings(updates=updates)


def run_direct(cfg: Config, categories: list[str] | None = None, dataset: str | None = None,
               rerun: list[str] | None = None, artifacts: str | None = None) -> dict[str, Any]:
    """The same graph, one stage after another in this process, without Prefect."""
    from flows.pipeline import run_stage_now

    t0 = time.perf_counter()
    root = artifacts_root(artifacts)
    Store(root).check_writable()
    targets = resolve_targets(cfg, categories, dataset)
    dag.check_inputs(cfg)
    forced = dag.downstream_closure(list(rerun or []), cfg)
    devices = visible_devices(cfg.runtime.gpus, cfg.runtime.device)

    def submit(stage: str, ds: str, cat: str, ups: dict) -> dict:
        return run_stage_now(stage, cfg, root, ds, cat, ups, stage in forced, devices)

    results = walk(cfg, targets, submit)
    return {"profile": cfg.profile, "artifacts": root, "seconds": round(time.perf_counter() - t0, 3),
            "stages": summary_rows(results)}


def status_table(profile: str, overrides: list[str], categories: list[str] | None, dataset: str | None,
                 data_roots: dict[str, str] | None, artifacts: str | None) -> pd.DataFrame:
    """Per category and stage: current (built for this config), resumable (a killed build left checkpoints),
    stale (built for another config only), or missing."""
    cfg = make_config(profile, overrides, dataset, data_roots)
    store = Store(artifacts_root(artifacts))
    rows = []

    def submit(stage: str, ds: str, cat: str, ups: dict) -> Any:
        ref = stage_ref(dag.MODULES[stage], cfg, store, ds, cat, ups)
        if store.exists(ref):
            state = "current"
        elif store.has_progress(ref):
            state = "resumable"  # a killed build's checkpoints: `realnet run` continues from them
        else:
            state = "stale" if store.list(stage=stage, dataset=ds, category=ref.category) else "missing"
        rows.append({"dataset": ds, "category": cat, "stage": stage, "state": state, "key": ref.key})
        return ref

    walk(cfg, resolve_targets(cfg, categories, dataset), submit)
    return pd.DataFrame(rows)
