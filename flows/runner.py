"""Entry points behind ``realnet run`` and ``realnet status``: through Prefect or in this process."""

from __future__ import annotations

import os
import time
from typing import Any

import pandas as pd

from flows.graph import resolve_targets, summary_rows, walk
from flows.plan import RunPlan, artifacts_root, make_config, plan_config, plan_run, run_stage_now
from realnet_core.config import Config
from stages import dag
from stages.common import stage_ref
from storage.store import Store


def run_pipeline(categories: list[str] | None = None, dataset: str | None = None,
                 data_roots: dict[str, str] | None = None, profile: str = "demo",
                 overrides: list[str] | None = None, rerun: list[str] | None = None,
                 artifacts: str | None = None, use_prefect: bool = True) -> dict[str, Any]:
    """Plan the run once (every mistake fails here, before Prefect's server starts), then run that plan
    through the Prefect flow or in this process."""
    plan = plan_run(categories, dataset, data_roots, profile, overrides, rerun, artifacts)
    if not use_prefect:
        return run_plan(plan)
    from flows.pipeline import realnet

    with _patient_ephemeral_server():
        return realnet(categories=categories, dataset=dataset, data_roots=data_roots, profile=profile,
                       overrides=overrides, rerun=rerun, artifacts=artifacts, plan=plan)


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
    """The same graph for a config, one stage after another in this process, without Prefect."""
    return run_plan(plan_config(cfg, categories, dataset, rerun, artifacts))


def run_plan(plan: RunPlan) -> dict[str, Any]:
    """A planned run, one stage after another in this process, without Prefect."""
    t0 = time.perf_counter()
    forced = set(plan.forced)

    def submit(stage: str, ds: str, cat: str, ups: dict) -> dict:
        return run_stage_now(stage, plan.cfg, plan.root, ds, cat, ups, stage in forced, plan.devices)

    results = walk(plan.cfg, plan.targets, submit)
    return {"profile": plan.cfg.profile, "artifacts": plan.root, "seconds": round(time.perf_counter() - t0, 3),
            "stages": summary_rows(results)}


def status_table(profile: str, overrides: list[str], categories: list[str] | None, dataset: str | None,
                 data_roots: dict[str, str] | None, artifacts: str | None) -> pd.DataFrame:
    """Per category and stage: current (built for this config), damaged (built for this config, but a file
    is missing or cut short, or the manifest does not parse: `problem` names it; `realnet run` rebuilds it),
    resumable (a killed build left checkpoints), stale (built for another config only), or missing."""
    cfg = make_config(profile, overrides, dataset, data_roots)
    store = Store(artifacts_root(artifacts))
    rows = []

    def submit(stage: str, ds: str, cat: str, ups: dict) -> Any:
        ref = stage_ref(dag.MODULES[stage], cfg, store, ds, cat, ups)
        problem = store.damage(ref) or ""
        if problem:
            state = "damaged"
        elif store.exists(ref):
            state = "current"
        elif store.has_progress(ref):
            state = "resumable"  # a killed build's checkpoints: `realnet run` continues from them
        else:
            state = "stale" if store.list(stage=stage, dataset=ds, category=ref.category) else "missing"
        rows.append({"dataset": ds, "category": cat, "stage": stage, "state": state, "key": ref.key,
                     "problem": problem})
        return ref

    walk(cfg, resolve_targets(cfg, categories, dataset), submit)
    return pd.DataFrame(rows)
