"""A user's own parts from real photographs that scikit-image ships: crops of ``coffee()`` (a cup on a
table) as the normal images, hand-made defects with exact masks as the anomalous ones, written as plain
folders (normal, abnormal, masks) or as an MVTec-style tree with any category name."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from realnet_core.data.demo import _random_crop, _write_png, add_defect

KINDS = ("scratch", "stain", "foreign")
# CutPaste as the anomaly source (no diffusion stages), tiny sizes: each run takes seconds.
TINY = [
    "synthesis.source=cutpaste", "afs.batches=2", "afs.batch_size=4", "afs.dims=[16,24,48,96]",
    "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=4", "data.image_size=64",
    "evaluate.overlays=2", "runtime.progress=false", "runtime.threads=1",
]
TREE_NAME = "Bracket-2.b"


def _photos() -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    return data.coffee().astype(np.float32), data.rocket().astype(np.float32)


def build_parts(out: Path, n_normal: int = 20, n_abnormal: int = 6, size: int = 48, masks: bool = True,
                layout: str = "plain", name: str = "cup", seed: int = 0) -> Path:
    """Write the images; returns ``out`` (plain: ``out/normal``, ``out/abnormal``, ``out/masks``; tree:
    ``out/<name>/train/good``, ``test/{good,<kind>}``, ``ground_truth/<kind>``)."""
    rng = np.random.default_rng(seed)
    photo, donor_photo = _photos()
    normal = [_random_crop(photo, size, rng) for _ in range(n_normal)]
    bad = []
    for i in range(n_abnormal):
        clean, donor = _random_crop(photo, size, rng), _random_crop(donor_photo, size, rng)
        bad.append((KINDS[i % len(KINDS)], *add_defect(clean, KINDS[i % len(KINDS)], rng, name, donor,
                                                        stain_colour=(40, 90, 160))))
    if layout == "plain":
        for i, img in enumerate(normal):
            _write_png(out / "normal" / f"n{i:03d}.png", img)
        for i, (_, img, mask) in enumerate(bad):
            _write_png(out / "abnormal" / f"a{i:03d}.png", img)
            if masks:
                _write_png(out / "masks" / f"a{i:03d}_mask.png", mask.astype(np.uint8) * 255)
        return out
    cat = out / name
    for i, img in enumerate(normal):
        _write_png(cat / "train" / "good" / f"{i:03d}.png", img)
    for i, (kind, img, mask) in enumerate(bad):
        _write_png(cat / "test" / kind / f"{i:03d}.png", img)
        if masks:
            _write_png(cat / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    return out


def plain_overrides(root: Path, name: str, masks: bool = True) -> list[str]:
    sets = [f"data.folders.{name}.normal={root / 'normal'}"]
    if (root / "abnormal").is_dir():
        sets.append(f"data.folders.{name}.abnormal={root / 'abnormal'}")
    if masks and (root / "masks").is_dir():
        sets.append(f"data.folders.{name}.masks={root / 'masks'}")
    return sets
