"""The artifact tables by name: which stage writes each, and ``load`` across the store with a typo check."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stages import dag
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


def load(name: str, root: str = "artifacts", **kwargs: Any) -> pd.DataFrame:
    """``storage.tables.load`` for a table some stage writes (see there for ``stage``, ``latest``, ``keys``)."""
    return _tables.load(name, root, writer=table_stage(name), **kwargs)
