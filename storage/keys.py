"""Artifact keys: a stable hash of everything that determines an artifact's content.

The key covers the stage name, the stage's version string, its config section (canonical JSON),
the keys of its upstream artifacts and a fingerprint of the input data, so a change to any of
them gives a new key and therefore a rerun, while unrelated changes keep the cache valid.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal


def to_jsonable(obj: Any, _where: str = "$") -> Any:
    """Convert `obj` into plain JSON types, refusing anything whose JSON form would be ambiguous."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        if not math.isfinite(obj):
            # NaN/inf have no JSON form; a config holding them is almost certainly a mistake.
            raise TypeError(f"cannot encode non-finite float {obj!r} at {_where}")
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(
                    f"cannot encode dict key of type {type(k).__name__} at {_where}: keys must be str"
                )
            out[k] = to_jsonable(v, f"{_where}.{k}")
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(obj)]
    if type(obj).__module__ == "numpy" and hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:
        # numpy scalars sneak into configs through arithmetic; encode them as their Python value.
        return to_jsonable(obj.item(), _where)
    raise TypeError(
        f"cannot encode object of type {type(obj).__module__}.{type(obj).__qualname__} at {_where}"
    )


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace; floats use repr (json's default), Paths become str,
    tuples become lists. Raises TypeError naming the offending type and where it was found."""
    return json.dumps(
        to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def artifact_key(
    stage: str,
    version: str,
    config: Mapping[str, Any],
    upstream: list[str] | Mapping[str, str],
    data_fingerprint: str = "",
) -> str:
    """First 16 hex characters of sha256 over stage, version, config, upstream keys and data fingerprint.

    A list of upstream keys is sorted: it names a set of inputs, and the order in which a flow
    happens to list them must not invalidate the cache.
    """
    ups = dict(upstream) if isinstance(upstream, Mapping) else sorted(upstream)
    payload = {
        "stage": stage,
        "version": version,
        "config": config,
        "upstream": ups,
        "data": data_fingerprint,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:16]


def _expand(paths: Iterable[str | os.PathLike], root: Path) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            files.extend(q for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"cannot fingerprint {p}: no such file or directory")
    return files


def fingerprint_files(
    paths: Iterable[str | os.PathLike],
    root: str | os.PathLike,
    mode: Literal["stat", "content"] = "stat",
) -> str:
    """sha256 hex digest over the files' paths relative to `root` plus sizes and mtime_ns ("stat",
    cheap) or plus content hashes ("content", survives copies that change mtimes).

    Directories are expanded recursively. Relative paths keep the fingerprint identical when the
    dataset is mounted somewhere else.
    """
    if mode not in ("stat", "content"):
        raise ValueError(f"fingerprint mode must be 'stat' or 'content', got {mode!r}")
    root = Path(os.path.abspath(root))
    entries = []
    for f in _expand(paths, root):
        # relpath, not resolve(): symlinked dataset files keep their in-tree name.
        rel = Path(os.path.relpath(os.path.abspath(f), root)).as_posix()
        st = f.stat()
        if mode == "stat":
            entries.append((rel, st.st_size, st.st_mtime_ns))
        else:
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    h.update(block)
            entries.append((rel, st.st_size, h.hexdigest()))
    digest = hashlib.sha256()
    for entry in sorted(set(entries)):
        digest.update(canonical_json(list(entry)).encode("utf-8") + b"\n")
    return digest.hexdigest()
