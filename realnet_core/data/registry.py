"""The known datasets and their categories (the 36 of the paper, the bundled demo and the development set).

Names are validated here before they are ever joined onto a path, so that a category coming from
a command line or a config file cannot point outside the dataset root.
"""

from __future__ import annotations

import difflib
import re

from .errors import DatasetError

DATASETS: dict[str, tuple[str, ...]] = {
    "mvtec": (
        "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
        "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
    ),
    "visa": (
        "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
        "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum",
    ),
    "mpdd": ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"),
    "btad": ("01", "02", "03"),
    "demo": ("brick", "grass"),
    # The development set (realnet_core.data.devset): real photographs with hand-made defects.
    "dev": ("moon", "foliage", "cell", "coins"),
    # A user's own data: any safe category name (realnet_core.data.folders), so none is listed here.
    "folder": (),
}
# Datasets whose categories are whatever the user names, checked only for being safe path parts.
OPEN_DATASETS = ("folder",)

_OWNER: dict[str, str] = {c: d for d, cats in DATASETS.items() for c in cats}
# A category name must map to one dataset, or dataset_of() would be ambiguous.
assert len(_OWNER) == sum(len(c) for c in DATASETS.values())


def _check_safe(kind: str, name: object) -> str:
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{kind} name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or "\0" in name or name.startswith(".") or ".." in name or ":" in name:
        raise DatasetError(f"unsafe {kind} name {name!r}: it must not contain path separators, '..' "
                           "or a leading dot")
    return name


# A user's category name becomes a folder of the artifact store: the store's own rule (storage.names).
_SAFE_OPEN = re.compile(r"[A-Za-z0-9_.\-]{1,100}")


def _check_open(category: object) -> None:
    _check_safe("category", category)
    if not _SAFE_OPEN.fullmatch(category):
        raise DatasetError(f"unsafe category name {category!r}: use 1-100 letters, digits, '_', '.' or '-' "
                           "(it names folders of the artifact store)")


def _close(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def dataset_of(category: str) -> str:
    """The dataset a category belongs to, e.g. ``dataset_of("pcb1") == "visa"``."""
    _check_safe("category", category)
    try:
        return _OWNER[category]
    except KeyError:
        raise DatasetError(f"unknown category {category!r}{_close(category, list(_OWNER))}") from None


def check_dataset(dataset: str) -> None:
    """Raise ``DatasetError`` unless ``dataset`` is a known, safe dataset name."""
    _check_safe("dataset", dataset)
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r}{_close(dataset, list(DATASETS))}; "
                           f"known: {', '.join(DATASETS)}")


def check_name(dataset: str, category: str) -> None:
    """Raise ``DatasetError`` unless ``category`` is a known category of ``dataset``."""
    check_dataset(dataset)
    if dataset in OPEN_DATASETS:
        _check_open(category)
        return
    _check_safe("category", category)
    if category not in DATASETS[dataset]:
        known = DATASETS[dataset]
        raise DatasetError(f"unknown category {category!r} for dataset {dataset!r}"
                           f"{_close(category, list(known))}; known: {', '.join(known)}")
