"""``realnet predict``: score new images with a trained model, decide ok or defect at the model's stored
threshold, and write heat maps and defect-region masks beside them."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from realnet_core.data.errors import DatasetError, DatasetProblems
from realnet_core.data.images import check_file, read_rgb, resize_rgb
from realnet_core.data.readers import IMAGE_EXTENSIONS, is_image_file
from realnet_core.runtime import resolve_device
from realnet_core.viz import overlay, write_png
from stages import calibrate, methods
from stages.export.engines import ENGINES, load_engine
from stages.inputs import to_tensor


def image_inputs(images: list[str]) -> list[Path]:
    """The image files to score: files as given, folders searched for images (recursively, sorted).

    Every file is checked before the model loads, and every problem is reported at once, so that a bad
    file in the middle of a list neither wastes the work before it nor leaves half an output folder.
    """
    files, problems = [], []
    for name in images:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_file(p.name) and p.is_file())
            files += found
            if not found:
                problems.append(f"{path}: no {'/'.join(IMAGE_EXTENSIONS)} files in this folder")
        elif not path.exists():
            problems.append(f"{path}: no such file or folder")
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            problems.append(f"{path}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
        else:
            files.append(path)
    for path in files:
        try:
            check_file(path, known_format=True)
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        raise DatasetProblems("nothing scored", problems)
    return files


def output_stems(files: list[Path]) -> list[str]:
    """A distinct output name per image: its stem, or, where stems repeat (MVTec names 000.png in every
    defect folder), its path below the inputs' common folder joined with '_' (``hole_000``)."""
    stems = [f.stem for f in files]
    if len(set(stems)) == len(stems):
        return stems
    resolved = [f.resolve() for f in files]
    common = Path(os.path.commonpath([f.parent for f in resolved]))
    return ["_".join(f.relative_to(common).with_suffix("").parts) for f in resolved]


def load(model: str, device: str = "auto", engine: str = "torch") -> tuple[Any, dict[str, Any] | None]:
    """The detector that scores images and its stored thresholds (None without): the PyTorch model of an
    artifact (``torch``; thresholds from its calibrate artifact), or an exported graph in a folder from
    ``realnet export`` run by onnxruntime (``onnx``) or OpenVINO (``openvino``; thresholds from its metadata)."""
    if engine not in ENGINES:
        raise ValueError(f"--engine {engine!r}: unknown engine; engines: {', '.join(ENGINES)}")
    dev = resolve_device(device)
    if engine != "torch":
        detector = load_engine(engine, model, dev)
        thresholds = detector.thresholds
        return detector, thresholds if thresholds and thresholds.get("image") is not None else None
    model_path, thresholds = calibrate.model_and_thresholds(model)
    return methods.load_detector(model_path, dev), thresholds


def predict(model: str, images: list[str], out: str = "predictions", device: str = "auto",
            pool: int | None = None, engine: str = "torch") -> Iterator[dict[str, Any]]:
    """Yield one row per image, one at a time: path, score, threshold, decision (``ok`` or ``defect``, None
    without a stored threshold), and the heat map, anomaly map and defect-region mask written for it."""
    files = image_inputs(images)
    dev = resolve_device(device)
    detector, thresholds = load(model, device, engine)
    size = detector.image_size
    if pool is not None and engine != "torch":
        raise ValueError(f"--pool {pool}: an exported model's image score is fixed in its graph "
                         f"(pool {detector.metadata.get('pool')}); leave out --pool, or use --engine torch")
    if pool is not None:
        if not hasattr(detector, "pool"):
            raise ValueError(f"--pool {pool}: the image score of this model's method does not pool its map")
        detector.pool = pool
        if thresholds is not None and thresholds.get("pool_size") not in (None, pool):
            print(f"realnet: warning: --pool {pool} is not the pool the stored threshold was set with "
                  f"({thresholds['pool_size']}): the ok/defect decisions may not hold", file=sys.stderr)
    elif engine == "torch":
        calibrate.score_as_calibrated(detector, thresholds)  # the image score the threshold was set on
    threshold = None if thresholds is None else float(thresholds["image"])
    pixel = None if thresholds is None else float(thresholds["pixel"])
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, stem in zip(files, output_stems(files), strict=True):
        img = read_rgb(path)
        amap, scores = detector.score(to_tensor(resize_rgb(img, size)[None], dev))
        score = float(scores[0])
        # The map goes back to the image's own size so it lines up with the original.
        full = cv2.resize(amap[0].float().cpu().numpy(), (img.shape[1], img.shape[0]),
                          interpolation=cv2.INTER_LINEAR)
        heat = out_dir / f"{stem}_heatmap.png"
        write_png(heat, np.concatenate([img, overlay(img, full)], axis=1))
        np.save(out_dir / f"{stem}_map.npy", full.astype(np.float16))
        row: dict[str, Any] = {"path": str(path), "score": score, "threshold": threshold,
                               "decision": None if threshold is None else ("defect" if score > threshold else "ok"),
                               "heatmap": str(heat), "map": str(out_dir / f"{stem}_map.npy"), "mask": None}
        if pixel is not None:  # the defect region: pixels above the pixel threshold, at the image's own size
            row["mask"] = str(out_dir / f"{stem}_defect.png")
            write_png(Path(row["mask"]), (full > pixel).astype(np.uint8) * 255)
        yield row
