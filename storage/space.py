"""Writes that fail for lack of disk space or quota, recognised and named.

An ``OSError`` with errno ENOSPC or EDQUOT is plain. ``torch.save`` hides the errno: it raises
``RuntimeError: [enforce fail at inline_container.cc:...] . unexpected pos ...`` (or "PytorchStreamWriter
failed writing file"), so such an error counts as out of space when the filesystem then has fewer bytes
free than the write needed. ``writing(path, needed)`` turns either into ``OutOfSpace`` naming the file,
the bytes needed and the bytes free; ``stages.common.execute`` adds the artifact root.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import OutOfSpace

NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_TORCH_WRITE_FAILURES = ("inline_container.cc", "PytorchStreamWriter failed", "unexpected pos")


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free to this user on the filesystem holding ``path`` (its nearest existing parent)."""
    p = Path(os.path.abspath(path))
    for candidate in (p, *p.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def no_space_cause(exc: BaseException, path: str | os.PathLike | None = None,
                   needed: int | None = None) -> BaseException | None:
    """The error in ``exc``'s chain that means "out of space or quota", or None."""
    for e in _chain(exc):
        if isinstance(e, OutOfSpace) or isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            return e
        if isinstance(e, RuntimeError) and any(t in str(e) for t in _TORCH_WRITE_FAILURES) and path is not None:
            free = free_bytes(path)
            if free is not None and (needed is None or free < needed):
                return e
    return None


def describe(path: str | os.PathLike | None, needed: int | None, free: int | None) -> str:
    if path is None:
        return "no space left (or quota exceeded)" + (f", {free:,} bytes free" if free is not None else "")
    need = f"needed {needed:,} bytes" if needed is not None else "needed more space"
    have = f", {free:,} bytes free" if free is not None else ""
    return f"no space left (or quota exceeded) writing {path}: it {need}{have}"


@contextlib.contextmanager
def writing(path: str | os.PathLike, needed: int | None) -> Iterator[None]:
    """Run a write of about ``needed`` bytes to ``path``; lack of space or quota -> OutOfSpace."""
    try:
        yield
    except OutOfSpace:
        raise
    except Exception as e:
        if no_space_cause(e, path, needed) is None:
            raise
        free = free_bytes(path)
        raise OutOfSpace(describe(path, needed, free), str(path), needed, free) from e


def payload_bytes(obj: object) -> int:
    """Bytes of the tensors and arrays in a (nested) checkpoint dict: what ``torch.save`` will write, about."""
    nbytes = getattr(obj, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(obj, dict):
        return sum(payload_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(payload_bytes(v) for v in obj)
    return 64  # a plain value: a few bytes of pickle
