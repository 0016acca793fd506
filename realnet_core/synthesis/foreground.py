"""Foreground masks that keep synthetic anomalies on the object, not on the background.

Each category has a fixed rule (as in the RealNet authors' data pipeline): threshold one channel
of the RGB image with Otsu or the triangle method, take the bright or the dark side as the
object, then clean the mask with a morphological closing and/or opening using square
structuring elements. Texture-like categories (and anything unknown, such as the demo
dataset or a user's own folder data) use the whole image. ``data.foreground`` in the config picks another
rule per category: ``whole``, a built-in category's rule by name, or a custom rule (``rule_for``).

| dataset | categories | rule |
|---|---|---|
| mvtec | carpet, leather, tile, wood, cable, transistor | whole image |
| mvtec | pill | gray, Otsu, bright; close 6, open 6 |
| mvtec | hazelnut, metal_nut, toothbrush | gray, triangle, bright; close 6, open 6 |
| mvtec | bottle, capsule, grid, screw, zipper | gray, Otsu, dark; close 6, open 6 |
| visa | capsules | whole image |
| visa | pcb1-4 | blue, triangle, bright; close 8, open 3 |
| visa | others | gray, Otsu, bright; close 3, open 3 |
| mpdd | bracket_black, bracket_brown, connector | green, Otsu, dark; close 6 |
| mpdd | bracket_white, tubes | blue, Otsu, bright; close 6 |
| mpdd | metal_plate (and others) | gray, Otsu, dark; close 6 |
| btad | 02 | whole image |
| btad | 01, 03 (and others) | gray, Otsu, bright; close 15, open 6 |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np

Channel = Literal["gray", "red", "green", "blue"]
Method = Literal["otsu", "triangle"]
Polarity = Literal["bright", "dark"]


@dataclass(frozen=True)
class ForegroundRule:
    """How to segment one category. ``whole_image`` rules ignore the other fields.

    ``close`` / ``open`` are the side lengths of the square structuring elements (0 = skip).
    """

    whole_image: bool
    channel: Channel = "gray"
    method: Method = "otsu"
    foreground: Polarity = "bright"
    close: int = 0
    open: int = 0


WHOLE_IMAGE = ForegroundRule(whole_image=True)

_ALIASES = {"mvtec": "mvtec", "mvtecad": "mvtec", "visa": "visa", "mpdd": "mpdd", "btad": "btad"}

_MVTEC_WHOLE = {"carpet", "leather", "tile", "wood", "cable", "transistor"}
_MVTEC: dict[str, ForegroundRule] = {
    "pill": ForegroundRule(False, "gray", "otsu", "bright", 6, 6),
    **{
        c: ForegroundRule(False, "gray", "triangle", "bright", 6, 6)
        for c in ("hazelnut", "metal_nut", "toothbrush")
    },
    **{
        c: ForegroundRule(False, "gray", "otsu", "dark", 6, 6)
        for c in ("bottle", "capsule", "grid", "screw", "zipper")
    },
}
_VISA_PCB = ForegroundRule(False, "blue", "triangle", "bright", 8, 3)
_VISA_OTHER = ForegroundRule(False, "gray", "otsu", "bright", 3, 3)
_MPDD: dict[str, ForegroundRule] = {
    **{
        c: ForegroundRule(False, "green", "otsu", "dark", 6, 0)
        for c in ("bracket_black", "bracket_brown", "connector")
    },
    **{c: ForegroundRule(False, "blue", "otsu", "bright", 6, 0) for c in ("bracket_white", "tubes")},
}
_MPDD_OTHER = ForegroundRule(False, "gray", "otsu", "dark", 6, 0)
_BTAD_OTHER = ForegroundRule(False, "gray", "otsu", "bright", 15, 6)


def _normalise_dataset(dataset: str) -> str:
    key = dataset.lower().replace("-", "").replace("_", "")
    return _ALIASES.get(key, key)


def foreground_rule(dataset: str, category: str) -> ForegroundRule:
    """The segmentation rule for ``(dataset, category)``; unknown pairs use the whole image."""
    ds = _normalise_dataset(dataset)
    cat = category.lower()
    if ds == "mvtec":
        if cat in _MVTEC_WHOLE:
            return WHOLE_IMAGE
        return _MVTEC.get(cat, WHOLE_IMAGE)
    if ds == "visa":
        if cat == "capsules":
            return WHOLE_IMAGE
        return _VISA_PCB if cat in {"pcb1", "pcb2", "pcb3", "pcb4"} else _VISA_OTHER
    if ds == "mpdd":
        return _MPDD.get(cat, _MPDD_OTHER)
    if ds == "btad":
        return WHOLE_IMAGE if cat == "02" else _BTAD_OTHER
    return WHOLE_IMAGE


def _channel(image: np.ndarray, channel: Channel) -> np.ndarray:
    if channel == "gray":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image[:, :, {"red": 0, "green": 1, "blue": 2}[channel]])


# cv2.morphologyEx uses one anchor for both passes, so with an even square (6, 8) a closing or an
# opening translates the mask by one pixel (two after close + open). Mirroring the anchor in the
# second pass gives the textbook operations (no shift), as scikit-image's closing/opening do.
# For odd sizes this is exactly cv2.morphologyEx.
def _kernel(size: int) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    a = size // 2
    b = size - 1 - a
    return np.ones((size, size), np.uint8), (a, a), (b, b)


def _close(binary: np.ndarray, size: int) -> np.ndarray:
    k, centre, mirrored = _kernel(size)
    # Border values chosen so that the image border does not create or erase foreground.
    # (Anchor order as in scikit-image, so the masks equal the authors' skimage ones.)
    grown = cv2.dilate(binary, k, anchor=mirrored, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.erode(grown, k, anchor=centre, borderType=cv2.BORDER_CONSTANT, borderValue=1)


def _open(binary: np.ndarray, size: int) -> np.ndarray:
    k, centre, mirrored = _kernel(size)
    shrunk = cv2.erode(binary, k, anchor=centre, borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return cv2.dilate(shrunk, k, anchor=mirrored, borderType=cv2.BORDER_CONSTANT, borderValue=0)


def apply_rule(image: np.ndarray, rule: ForegroundRule) -> np.ndarray:
    """Apply ``rule`` to an RGB uint8 image (H, W, 3); returns a bool (H, W) mask (never empty)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if rule.whole_image:
        return np.ones((h, w), dtype=bool)
    plane = _channel(image, rule.channel)
    flag = cv2.THRESH_OTSU if rule.method == "otsu" else cv2.THRESH_TRIANGLE
    _, binary = cv2.threshold(plane, 0, 1, cv2.THRESH_BINARY | flag)
    if rule.foreground == "dark":
        binary = 1 - binary
    binary = binary.astype(np.uint8)
    # Closing first fills pinholes in the object; opening then drops isolated background specks.
    if rule.close > 0:
        binary = _close(binary, rule.close)
    if rule.open > 0:
        binary = _open(binary, rule.open)
    mask = binary.astype(bool)
    # An empty foreground would make every synthetic sample normal; fall back to the whole image.
    if not mask.any():
        return np.ones((h, w), dtype=bool)
    return mask


def foreground_mask(image: np.ndarray, dataset: str, category: str) -> np.ndarray:
    """Foreground of an RGB uint8 image (H, W, 3) as a bool (H, W) array, per the category's rule."""
    return apply_rule(image, foreground_rule(dataset, category))


WHOLE = "whole"
_DATASETS = ("mvtec", "visa", "mpdd", "btad")


def rule_by_name(name: str) -> ForegroundRule:
    """A rule given by name: ``whole``, or a built-in category's (``bottle`` or ``mvtec/bottle``)."""
    from realnet_core.data.errors import DatasetError
    from realnet_core.data.registry import check_name, dataset_of

    if name == WHOLE:
        return WHOLE_IMAGE
    dataset, _, category = name.rpartition("/")
    try:
        if dataset:
            if dataset not in _DATASETS:
                raise DatasetError(f"no built-in foreground rules for dataset {dataset!r}")
            check_name(dataset, category)
        else:
            dataset = dataset_of(category)
            if dataset not in _DATASETS:
                raise DatasetError(f"{category!r} is not one of the 36 benchmark categories")
    except DatasetError as exc:
        raise ValueError(f"foreground rule {name!r}: {exc}; give {WHOLE!r}, one of the 36 categories "
                         "(e.g. bottle or mvtec/bottle) or a custom rule") from None
    return foreground_rule(dataset, category)


def rule_for(dataset: str, category: str, configured: str | Mapping[str, Any] | None = None) -> ForegroundRule:
    """The rule a run uses: the configured one (a name or the fields of a custom rule), else the built-in
    rule of the category, which is the whole image for a category the table above does not list."""
    if configured is None:
        return foreground_rule(dataset, category)
    if isinstance(configured, str):
        return rule_by_name(configured)
    return ForegroundRule(whole_image=False, **dict(configured))


def describe_rule(rule: ForegroundRule) -> str:
    """One line, e.g. ``gray, otsu, dark; close 6, open 6`` or ``whole image``."""
    if rule.whole_image:
        return "whole image"
    return f"{rule.channel}, {rule.method}, {rule.foreground}; close {rule.close}, open {rule.open}"
