"""The plan of a run, built once: config, targets, forced stages, devices and artifact root, every input checked.

``realnet run`` builds it before Prefect's server starts, so a mistake fails in seconds, and hands the same
plan to the Prefect flow or to the direct runner; a served deployment builds it in the flow from its
parameters. ``run_stage_now`` runs one stage of a plan on the device slot it holds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from flows.device_slots import shared_pool, visible_devices
from flows.graph import resolve_targets
from realnet_core.config import Config, load_config
from realnet_core.data.registry import check_dataset
from stages import dag
from stages.common import execute
from storage.store import ArtifactRef, Store

DEFAULT_ARTIFACTS = "artifacts"
BUNDLED_ROOTS = {"demo": "demo_data", "dev": "dev_data"}  # built on first use, so a root is never required


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
    cfg = load_config(profile, [*extra, *(overrides or [])])
    bundled = dataset or cfg.data.dataset
    if bundled in BUNDLED_ROOTS and bundled not in cfg.data.roots:
        extra.append(f"data.roots.{bundled}={BUNDLED_ROOTS[bundled]}")
        cfg = load_config(profile, [*extra, *(overrides or [])])
    return cfg


def ensure_demo_data(cfg: Config, targets: list[tuple[str, str]]) -> None:
    """The bundled datasets need no download: build the demo (or development) set where the config expects it."""
    from realnet_core.data.demo import build_demo_dataset
    from realnet_core.data.devset import build_dev_dataset

    builders = {"demo": build_demo_dataset, "dev": build_dev_dataset}
    for ds, build in builders.items():
        if any(d == ds for d, _ in targets):
            root = Path(cfg.data.roots.get(ds, BUNDLED_ROOTS[ds]))
            if not root.exists():
                # stderr: stdout carries `realnet run --json`, which must stay parseable.
                print(f"building the {ds} dataset in {root}", file=sys.stderr)
                build(root)


class RunPlan(BaseModel):
    """What a run does, checked: small and plain, so that it travels as a Prefect flow parameter."""

    model_config = ConfigDict(frozen=True)

    cfg: Config
    targets: list[tuple[str, str]]
    root: str
    forced: list[str]
    devices: list[str]


def plan_config(cfg: Config, categories: list[str] | None = None, dataset: str | None = None,
                rerun: list[str] | None = None, artifacts: str | None = None) -> RunPlan:
    """The plan for a config: safe target names, the bundled data built, every input file present, the root
    writable."""
    targets = resolve_targets(cfg, categories, dataset)
    ensure_demo_data(cfg, targets)
    dag.check_inputs(cfg, targets)
    forced = sorted(dag.downstream_closure(list(rerun or []), cfg))
    # On Ray, Ray hands each task its device; here, the slots of this machine.
    ray = cfg.runtime.task_runner == "ray"
    devices = [] if ray else visible_devices(cfg.runtime.gpus, cfg.runtime.device)
    # Last: a run that fails a check above leaves no folder behind, not even an empty root.
    root = artifacts_root(artifacts)
    Store(root).check_writable()
    return RunPlan(cfg=cfg, targets=targets, root=root, forced=forced, devices=devices)


def plan_run(categories: list[str] | None = None, dataset: str | None = None,
             data_roots: dict[str, str] | None = None, profile: str = "demo",
             overrides: list[str] | None = None, rerun: list[str] | None = None,
             artifacts: str | None = None) -> RunPlan:
    """The plan of ``realnet run``'s arguments (and of the flow's parameters)."""
    return plan_config(make_config(profile, overrides, dataset, data_roots), categories, dataset, rerun, artifacts)


def run_stage_now(stage: str, cfg: Config, artifacts: str, dataset: str, category: str,
                  upstream: dict[str, dict[str, Any]], force: bool, devices: list[str]) -> dict[str, Any]:
    """Run (or reuse) one stage in this process, on the compute thread of the device slot it holds."""
    store = Store(artifacts)
    refs = {name: ArtifactRef.from_dict(r) for name, r in upstream.items()}
    module = dag.MODULES[stage]
    result = shared_pool(devices).run(
        lambda device: execute(module, cfg, store, dataset, category, refs, force=force, device=device))
    return result.to_dict()
