"""The development set: real photographs with hand-made defects, hard enough to rank methods.

The demo data (brick, grass) scores 99-100% whatever changes. This set is cut the same way from
other photographs that the installed packages ship, in the MVTec-AD layout, at 256 px:

| category | source photograph | kind |
|---|---|---|
| ``moon`` | ``skimage.data.moon()``, lunar surface | natural texture |
| ``foliage`` | trees of scikit-learn's ``china.jpg`` | natural texture |
| ``cell`` | ``skimage.data.cell()``, a microscopy image, stained pink | tissue-like section |
| ``coins`` | ``skimage.data.coins()``, coins on a dark cloth | objects on a dark background |

Each category has 60 normal training images, 20 normal and 30 defective test images: six each of
scratch, stain, hole, foreign material and smudge (a blur with a haze), with exact masks: no pixel
outside a mask differs from the clean crop.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .demo import _random_crop, _write_png, add_defect

DEV_DEFECTS: tuple[str, ...] = ("scratch", "stain", "hole", "foreign", "smudge")


@dataclass(frozen=True)
class _Source:
    region: tuple[slice, slice]  # rows, columns of the photograph that crops are cut from
    tint: tuple[float, float, float]
    stain: tuple[int, int, int]
    crop: tuple[float, float] = (0.45, 0.70)  # crop side, as a share of the region's shorter side


_SOURCES: dict[str, _Source] = {
    "moon": _Source((slice(0, 512), slice(0, 512)), (1.0, 0.93, 0.82), (70, 40, 25)),
    "foliage": _Source((slice(285, 427), slice(430, 640)), (1.0, 1.0, 1.0), (150, 60, 140), (0.75, 1.0)),
    "cell": _Source((slice(0, 660), slice(0, 550)), (0.95, 0.62, 0.85), (40, 90, 60)),
    "coins": _Source((slice(0, 303), slice(0, 384)), (1.0, 0.9, 0.7), (30, 80, 150), (0.50, 0.80)),
}
DEV_CATEGORIES: tuple[str, ...] = tuple(_SOURCES)


def _photograph(category: str) -> np.ndarray:
    """The category's photograph as float RGB (tinted when grey), cut to its region."""
    from skimage import data as skdata

    if category == "foliage":
        from sklearn.datasets import load_sample_image

        img = load_sample_image("china.jpg")
    else:
        img = getattr(skdata, category)()
    src = _SOURCES[category]
    img = img[src.region].astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None] * np.asarray(src.tint, np.float32)
    return img


def build_dev_dataset(out: str | os.PathLike, size: int = 256, n_train: int = 60, n_test_good: int = 20,
                      n_test_bad: int = 30, seed: int = 0, categories: tuple[str, ...] = DEV_CATEGORIES) -> Path:
    """Write the development set under ``out`` (MVTec-AD layout) and return its root.

    The result is a pure function of the arguments; each category has its own random stream.
    """
    unknown = [c for c in categories if c not in _SOURCES]
    if unknown:
        raise ValueError(f"unknown development categories {unknown}; known: {', '.join(DEV_CATEGORIES)}")
    root = Path(out)
    for category in categories:
        ci = DEV_CATEGORIES.index(category)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 100 + ci]))
        photo = _photograph(category)
        donor_cat = DEV_CATEGORIES[(ci + 1) % len(DEV_CATEGORIES)]
        donor_photo = _photograph(donor_cat)
        share, donor_share = _SOURCES[category].crop, _SOURCES[donor_cat].crop
        cat = root / category
        for i in range(n_train):
            _write_png(cat / "train" / "good" / f"{i:03d}.png", _random_crop(photo, size, rng, share))
        for i in range(n_test_good):
            _write_png(cat / "test" / "good" / f"{i:03d}.png", _random_crop(photo, size, rng, share))
        per_kind = {k: 0 for k in DEV_DEFECTS}
        for i in range(n_test_bad):
            kind = DEV_DEFECTS[i % len(DEV_DEFECTS)]
            clean = _random_crop(photo, size, rng, share)
            donor = _random_crop(donor_photo, size, rng, donor_share)
            img, mask = add_defect(clean, kind, rng, category, donor, stain_colour=_SOURCES[category].stain)
            stem = f"{per_kind[kind]:03d}"
            per_kind[kind] += 1
            _write_png(cat / "test" / kind / f"{stem}.png", img)
            _write_png(cat / "ground_truth" / kind / f"{stem}_mask.png", mask.astype(np.uint8) * 255)
    (root / "README.txt").write_text(
        f"RealNet pipeline development set, built by realnet_core.data.devset.build_dev_dataset(size={size}, "
        f"n_train={n_train}, n_test_good={n_test_good}, n_test_bad={n_test_bad}, seed={seed}).\n"
        "Sources: skimage.data.moon(), skimage.data.cell(), skimage.data.coins() and the trees of\n"
        "scikit-learn's china.jpg. Defects are drawn by hand with exact masks: "
        f"{', '.join(DEV_DEFECTS)}.\n", encoding="utf-8")
    return root
