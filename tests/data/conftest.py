"""Builders for small dataset trees in each real on-disk layout (mvtec, mpdd, btad, visa raw/split)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest


def write_image(path: Path, shape: tuple[int, ...] = (16, 16, 3), seed: int = 0,
                value: np.ndarray | None = None, ext: str | None = None) -> Path:
    """Encode a random (or given) uint8 array with OpenCV, in the format given by the file suffix."""
    arr = value if value is not None else np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    ok, buf = cv2.imencode(ext or path.suffix, arr)
    assert ok, path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.tobytes())
    return path


def write_mask(path: Path, size: tuple[int, int] = (16, 16)) -> Path:
    m = np.zeros(size, np.uint8)
    m[2:6, 3:9] = 255
    return write_image(path, value=m)


def make_mvtec_like(root: Path, category: str, defects: dict[str, int], n_train: int = 3, n_good: int = 2,
                    ext: str = ".png") -> Path:
    """``<root>/<cat>/train/good``, ``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``."""
    cat = root / category
    for i in range(n_train):
        write_image(cat / "train" / "good" / f"{i:03d}{ext}", seed=i)
    for i in range(n_good):
        write_image(cat / "test" / "good" / f"{i:03d}{ext}", seed=100 + i)
    for d, n in defects.items():
        for i in range(n):
            write_image(cat / "test" / d / f"{i:03d}{ext}", seed=200 + i)
            write_mask(cat / "ground_truth" / d / f"{i:03d}_mask.png")
    return root


def make_btad(root: Path, category: str, img_ext: str, mask_ext: str, n_train: int = 3, n_ok: int = 2,
              n_ko: int = 2) -> Path:
    cat = root / category
    for i in range(n_train):
        write_image(cat / "train" / "ok" / f"{i:04d}{img_ext}", seed=i)
    for i in range(n_ok):
        write_image(cat / "test" / "ok" / f"{i:04d}{img_ext}", seed=10 + i)
    for i in range(n_ko):
        write_image(cat / "test" / "ko" / f"{i:04d}{img_ext}", seed=20 + i)
        write_mask(cat / "ground_truth" / "ko" / f"{i:04d}{mask_ext}")
    return root


def make_visa_raw(root: Path, n_train: int = 3, n_normal: int = 2, n_anomaly: int = 2) -> Path:
    """The raw VisA release: images under ``<cat>/Data``, splits in ``split_csv/1cls.csv``."""
    rows = []
    for obj in ("candle", "pcb1"):
        for i in range(n_train + n_normal):
            rel = f"{obj}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / rel, seed=i)
            rows.append([obj, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_anomaly):
            rel = f"{obj}/Data/Images/Anomaly/{i:03d}.JPG"
            mrel = f"{obj}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / rel, seed=50 + i)
            write_mask(root / mrel)
            rows.append([obj, "test", "anomaly", rel, mrel])
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    return root


def make_visa_split(root: Path, category: str = "candle") -> Path:
    """The MVTec-style VisA layout (from the split script): masks ``ground_truth/bad/<stem>.png``."""
    cat = root / category
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i:04d}.JPG", seed=i)
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i:04d}.JPG", seed=10 + i)
        write_image(cat / "test" / "bad" / f"{i:03d}.JPG", seed=20 + i)
        write_mask(cat / "ground_truth" / "bad" / f"{i:03d}.png")
    return root


@pytest.fixture
def trees():
    """The builders, as a fixture so that test modules need no import from this folder."""

    class Trees:
        image = staticmethod(write_image)
        mask = staticmethod(write_mask)
        mvtec_like = staticmethod(make_mvtec_like)
        btad = staticmethod(make_btad)
        visa_raw = staticmethod(make_visa_raw)
        visa_split = staticmethod(make_visa_split)

    return Trees
