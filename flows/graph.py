"""Walk the stage graph for a set of categories; the caller decides how a stage is submitted.

The same walk drives the Prefect flow (``submit`` = ``task.submit``) and the plain in-process
runner (``submit`` = call now), so both run exactly the same graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from realnet_core.config import Config
from realnet_core.data.errors import DatasetError
from realnet_core.data.registry import DATASETS, OPEN_DATASETS, check_name, dataset_of
from stages import dag
from stages.common import DATASET_SCOPE

Submit = Callable[[str, str, str, dict[str, Any]], Any]


def resolve_targets(cfg: Config, categories: list[str] | None = None, dataset: str | None = None
                    ) -> list[tuple[str, str]]:
    """(dataset, category) pairs from names like ``bottle``, ``mvtec/bottle`` or ``all``."""
    names = list(categories or cfg.data.categories or [])
    ds_default = dataset or cfg.data.dataset
    if not names:
        if ds_default not in DATASETS:
            check_name(ds_default, "_")  # raises with the list of datasets
        names = list(DATASETS[ds_default]) or sorted(cfg.data.folders)
        if not names:  # a user's own dataset lists no categories of its own
            raise DatasetError(f"dataset {ds_default!r}: name a category (--category NAME, data.categories "
                               "or data.folders.NAME)")
    if names == ["all"]:
        return [(ds, c) for ds in ("mvtec", "visa", "mpdd", "btad") for c in DATASETS[ds]]
    out = []
    for name in names:
        if "/" in name and (not dataset or name.split("/", 1)[0] in DATASETS):
            ds, cat = name.split("/", 1)
        elif dataset or ds_default in OPEN_DATASETS or ds_default in DATASETS and name in DATASETS[ds_default]:
            ds, cat = ds_default, name
        else:
            try:
                ds, cat = dataset_of(name), name
            except DatasetError:
                if ds_default in DATASETS:
                    check_name(ds_default, name)  # its message lists the default dataset's categories
                raise
        check_name(ds, cat)
        if (ds, cat) not in out:
            out.append((ds, cat))
    return out


def walk(cfg: Config, targets: list[tuple[str, str]], submit: Submit) -> dict[tuple[str, str, str], Any]:
    """Submit every active stage of every target once, upstream first.

    Returns handles keyed by (dataset, category, stage). A dataset-scoped diffusion model is
    submitted once per dataset and shared by its categories.
    """
    handles: dict[tuple[str, str, str], Any] = {}
    shared: dict[tuple[str, str], Any] = {}
    for ds, cat in targets:
        for stage in dag.active(cfg):
            if stage == "train_diffusion" and cfg.diffusion.scope == "dataset":
                if (ds, stage) not in shared:
                    shared[(ds, stage)] = submit(stage, ds, cat, {})
                handles[(ds, cat, stage)] = shared[(ds, stage)]
                continue
            ups = {u: handles[(ds, cat, u)] for u in dag.upstream(stage, cfg)}
            handles[(ds, cat, stage)] = submit(stage, ds, cat, ups)
    return handles


def summary_rows(results: dict[tuple[str, str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for (ds, cat, stage), res in results.items():
        shared = res.get("category") == DATASET_SCOPE
        rows.append({"dataset": ds, "category": cat, "stage": stage, "status": res["status"],
                     "key": res["key"], "seconds": res["seconds"], "path": res["path"], "shared": shared})
    return rows
