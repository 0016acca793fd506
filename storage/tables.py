"""Parquet tables: atomic writes inside an artifact, and `load(name)` to browse one table across
every complete artifact of the store as a single DataFrame (e.g. `load("metrics")`)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from .names import safe_name
from .space import writing
from .store import Store, StoreError

ID_COLUMNS = ["stage", "dataset", "category", "artifact_key"]


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write `df` as Parquet (pyarrow) to a local path, via a temp file and os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with writing(path, int(df.memory_usage(deep=True).sum())):  # uncompressed size: an upper bound
            df.to_parquet(tmp, engine="pyarrow")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet table from a local path or an fsspec URL."""
    return pd.read_parquet(str(path), engine="pyarrow")


def _may_hold(store: Store, ref, filename: str, stage: str | None) -> bool:
    """Whether a damaged artifact would have held the table: it lists or has the file, or its manifest
    does not parse and it belongs to the stage that writes the table."""
    if store.has_file(ref, filename):
        return True
    try:
        return any(entry.get("path") == filename for entry in store.manifest(ref)["files"])
    except StoreError:
        return ref.stage == stage


def load(
    name: str, root: str = "artifacts", *, stage: str | None = None, latest: bool = True,
    keys: set[str] | None = None, known: Iterable[str] | None = None,
    on_damaged: Callable[[str], None] | None = None, writer: str | None = None,
    lineage: Callable[[dict[str, Any]], Any] | None = None,
) -> pd.DataFrame:
    """Concatenate `<name>.parquet` from every complete artifact under `root` (optionally one stage).

    Adds stage, dataset, category and artifact_key columns unless the table has them already.
    With `latest=True` only the newest artifact (manifest `created`) of each
    (stage, dataset, category) counts, so a rerun after a config change replaces the old rows; `lineage`
    (manifest -> a hashable) splits that further, so that, say, two methods' evaluate rows stand side by side.
    `keys` keeps only those artifacts (for example the keys a config gives: `realnet tables --current`).
    `known` lists the table names the stages write: a name outside them is a typo, not an empty table.
    A damaged artifact (see `Store.damage`) is skipped, never read: `on_damaged` gets the sentence that
    names its file (by default a warning line on stderr); `writer`, the stage that writes the table, also
    names its damaged artifacts whose manifest does not parse.
    """
    if known is not None and name not in (known := tuple(known)):
        raise ValueError(f"unknown table {name!r}; tables: {', '.join(known)}")
    warn = on_damaged or (lambda text: print(f"realnet: warning: skipped {text}", file=sys.stderr))
    filename = f"{safe_name(name, 'table')}.parquet"
    store = Store(root)
    if not store.root_exists():
        raise StoreError(f"artifact root {root!r} does not exist")
    if not store.is_folder():
        raise StoreError(f"artifact root {root!r} is not a folder")
    found = []
    for ref in store.list(stage=stage):
        if keys is not None and ref.key not in keys:
            continue
        damage = store.damage(ref)
        if damage is None:
            if store.has_file(ref, filename):
                manifest = store.manifest(ref)
                found.append((manifest["created"], ref, lineage(manifest) if lineage else None))
        elif _may_hold(store, ref, filename, writer):
            warn(damage)
    if latest:
        newest = {}
        for created, ref, line in sorted(found, key=lambda t: (pd.Timestamp(t[0]), t[1].key)):
            newest[(ref.stage, ref.dataset, ref.category, line)] = (created, ref, line)
        found = list(newest.values())
    frames = []
    for _, ref, _ in sorted(found, key=lambda t: (t[1].stage, t[1].dataset, t[1].category, t[0])):
        with store.open(ref, filename) as f:
            df = pd.read_parquet(f, engine="pyarrow")
        ids = {"stage": ref.stage, "dataset": ref.dataset, "category": ref.category, "artifact_key": ref.key}
        for pos, (col, value) in enumerate(ids.items()):
            if col not in df.columns:
                df.insert(min(pos, len(df.columns)), col, value)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in ID_COLUMNS})
    return pd.concat(frames, ignore_index=True)
