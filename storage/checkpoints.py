"""Model checkpoints: atomic saves, safe loads (weights_only) and errors that say what went wrong.

A checkpoint is a dict of tensors and plain values; loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch

from .space import payload_bytes, writing

_MAX_LISTED = 8


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model; the message names the file."""


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save `obj` to `path` via a temp file, fsync and os.replace: a crash leaves the old file."""
    if not isinstance(obj, dict):
        raise TypeError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Out of space: OutOfSpace naming the file and the bytes; the old file at `path` stays whole.
        with writing(path, payload_bytes(obj)), open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True); any unreadable, truncated or non-dict file -> CheckpointError."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # zip errors, unpickling errors, EOF... all mean the same to the caller
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {type(e).__name__}: {e}") from e
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _listed(label: str, items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"{label}: {', '.join(items[:_MAX_LISTED])}{more}"


def load_state_into(
    model: torch.nn.Module, state_dict: dict[str, Any], path_for_errors: str | os.PathLike
) -> None:
    """Load `state_dict` strictly into `model`, or raise CheckpointError listing the missing,
    unexpected and shape-mismatched keys (the usual sign of a checkpoint from another architecture)."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in own)
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict
        and hasattr(state_dict[k], "shape")
        and tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [
            _listed(label, items)
            for label, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            )
            if items
        ]
        raise CheckpointError(
            f"checkpoint {path_for_errors} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except Exception as e:
        raise CheckpointError(f"checkpoint {path_for_errors} could not be loaded: {e}") from e
