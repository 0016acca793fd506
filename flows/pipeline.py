"""The Prefect flow ``realnet``: every stage of every category as a task, wired by ``flows.graph``.

Each task first looks its artifact key up in the store and reuses it; Prefect's own result cache is
off, because the store (not Prefect) knows whether the files still exist. Tasks pass small
``ArtifactRef`` dicts, never tensors. A GPU-bound task holds one device slot for its whole run.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import UnfinishedRun, UpstreamTaskError

from flows.graph import summary_rows, walk
from flows.plan import RunPlan, plan_run, run_stage_now
from flows.reports import publish_reports
from realnet_core.config import Config


@task(name="stage", cache_policy=NO_CACHE, task_run_name="{stage}[{dataset}/{category}]", retries=0)
def stage_task(stage: str, cfg: Config, artifacts: str, dataset: str, category: str,
               upstream: dict[str, dict[str, Any]], force: bool, devices: list[str]) -> dict[str, Any]:
    result = run_stage_now(stage, cfg, artifacts, dataset, category, upstream, force, devices)
    get_run_logger().info("%s %s/%s: %s (%s) in %.1fs", stage, dataset, category, result["status"],
                          result["key"], result["seconds"])
    return result


def _submit_all(cfg: Config, targets: list[tuple[str, str]], artifacts: str, forced: set[str],
                devices: list[str], options: dict | None = None) -> dict[tuple[str, str, str], dict]:
    def submit(stage: str, ds: str, cat: str, ups: dict) -> Any:
        return stage_task.submit(stage, cfg, artifacts, ds, cat, ups, stage in forced, devices)

    if options:  # Ray: ask Ray for one GPU (or CPU) per task
        from prefect_ray.context import remote_options

        with remote_options(**options):
            futures = walk(cfg, targets, submit)
    else:
        futures = walk(cfg, targets, submit)
    results, errors, not_run = {}, [], 0
    for key, fut in futures.items():
        try:
            results[key] = fut.result()
        except (UnfinishedRun, UpstreamTaskError):  # never started: a stage upstream of it failed
            not_run += 1
        except Exception as exc:  # keep waiting for the other categories, then report
            errors.append(f"{key[2]} {key[0]}/{key[1]}: {exc}")
    if errors or not_run:
        raise RuntimeError("; ".join(errors) + (f" ({not_run} stage(s) downstream of it not run)" if not_run else ""))
    return results


@flow(name="realnet", log_prints=True)
def realnet(categories: list[str] | None = None, dataset: str | None = None,
            data_roots: dict[str, str] | None = None, profile: str = "demo",
            overrides: list[str] | None = None, rerun: list[str] | None = None,
            artifacts: str | None = None, plan: RunPlan | None = None) -> dict[str, Any]:
    """Run every stage of the config's method for the given categories, reusing every artifact already built.

    ``plan`` is the run planned by ``realnet run`` from the same arguments; a served deployment plans here.
    """
    t0 = time.perf_counter()
    plan = plan or plan_run(categories, dataset, data_roots, profile, overrides, rerun, artifacts)
    forced = set(plan.forced)
    if plan.cfg.runtime.task_runner == "ray":
        results = _ray_graph(plan.cfg, plan.targets, plan.root, forced)
    else:
        results = _submit_all(plan.cfg, plan.targets, plan.root, forced, plan.devices)
    rows = summary_rows(results)
    publish_reports(rows, plan.root)
    return {"profile": plan.cfg.profile, "artifacts": plan.root, "seconds": round(time.perf_counter() - t0, 3),
            "stages": rows}


def _ray_graph(cfg: Config, targets, root: str, forced: set[str]) -> dict:
    """The same graph on a Ray cluster (``runtime.ray_address``, or a local Ray when unset).

    Ray workers do not share this process's working directory, so local paths (artifact root,
    dataset roots) are made absolute first; on a multi-machine cluster they must lie on storage
    every node mounts at the same path, or be fsspec URLs.
    """
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise RuntimeError("runtime.task_runner=ray needs the ray extra: pip install 'realnet-pipeline[ray]'") from exc
    root = _absolute(root)
    cfg = cfg.model_copy(deep=True)
    cfg.data.roots = {ds: _absolute(p) for ds, p in cfg.data.roots.items()}
    address = cfg.runtime.ray_address
    if address:
        runner = RayTaskRunner(address=address)
    else:  # a throwaway local instance: no dashboard to start and serve
        runner = RayTaskRunner(init_kwargs={"include_dashboard": False})

    @flow(name="realnet-ray-graph", task_runner=runner)
    def graph() -> dict:
        import ray  # connected by now: the runner starts before the flow body

        gpu = ray.cluster_resources().get("GPU", 0) >= 1 and cfg.runtime.device != "cpu"
        if not gpu and cfg.runtime.device.startswith("cuda"):
            raise RuntimeError(f"runtime.device={cfg.runtime.device!r} but the Ray cluster has no GPU")
        options = {"num_gpus": 1} if gpu else {"num_cpus": 1}
        # Ray gives each task its own GPU through CUDA_VISIBLE_DEVICES, so inside a task it is "cuda".
        devices = ["cuda"] if gpu else ["cpu"]
        return _submit_all(cfg, targets, root, forced, devices, options)

    return graph()


def _absolute(path: str) -> str:
    if "://" in path:
        return path
    from pathlib import Path

    return str(Path(path).expanduser().resolve())
