"""The artifact tables by name: which stage writes each, and ``load`` across the store with a typo check."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stages import dag, methods
from storage import tables as _tables

ID_COLUMNS = _tables.ID_COLUMNS


def table_stages() -> dict[str, str]:
    """Each table and the stage that writes it, in stage order."""
    return {name: stage for stage, module in dag.MODULES.items() for name in module.TABLES}


def table_stage(name: str) -> str:
    """The stage that writes table `name`; ValueError listing the tables for any other name."""
    stages = table_stages()
    if name not in stages:
        raise ValueError(f"unknown table {name!r}; tables: {', '.join(stages)}")
    return stages[name]


def method_of(manifest: dict[str, Any]) -> str:
    """The method an artifact belongs to: the owner of its stage or of a stage it was built from ("" for the
    shared stages before any method's, such as train_diffusion)."""
    upstream = (manifest.get("meta") or {}).get("upstream") or {}
    for stage in (manifest.get("stage"), *sorted(upstream)):
        owner = methods.owner(stage) if isinstance(stage, str) else None
        if owner is not None:
            return owner.name
    return ""


def load(name: str, root: str = "artifacts", **kwargs: Any) -> pd.DataFrame:
    """``storage.tables.load`` for a table some stage writes (see there for ``stage``, ``latest``, ``keys``);
    the newest artifact of each stage, dataset and category counts per method, so that methods stand side by side."""
    return _tables.load(name, root, writer=table_stage(name), lineage=method_of, **kwargs)
