"""Stage: the decision thresholds of a trained model, set on its held-back normal images (any method).

The validation share (``data.val_fraction`` of the normal training images, never trained on) is scored by
the model's detector; the image threshold is the score that at most ``evaluate.target_fpr`` of those images
exceed, and the pixel threshold the same over all their map pixels. No anomalous image is needed, and the
test set is never looked at. Rule: an image (a pixel) is a defect where its score is above the threshold.

Writes ``thresholds.json``; the same entry is the ``thresholds`` key of the artifact's manifest meta, beside
``model`` (the model artifact it calibrates), so that predict and an exporter read one place. Without
validation images both thresholds are null, with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from realnet_core.config import Config
from stages import methods
from stages.common import StageContext
from stages.inputs import category_split, to_tensor, val_fingerprint
from stages.loaders import TestBatches, prefetch
from storage.store import MANIFEST

NAME = "calibrate"
VERSION = "1"
TABLES: tuple[str, ...] = ()
FILES: tuple[str, ...] = ()
MEMORY_HINT = "a smaller evaluate.batch_size"
THRESHOLDS = "thresholds.json"
RULE = "defect where score > threshold"


def key_config(cfg: Config) -> dict[str, Any]:
    ev = cfg.evaluate
    return {"target_fpr": ev.target_fpr, "pool_size": ev.pool_size, "image_size": cfg.data.image_size}


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    return val_fingerprint(cfg, dataset, category)


def threshold_at(scores: np.ndarray, target_fpr: float) -> float:
    """The smallest observed score that at most ``target_fpr`` of ``scores`` exceed (an order statistic, so
    that the false-positive rate on these images is never above the target)."""
    flat = np.sort(np.asarray(scores, np.float64).ravel())
    allowed = int(np.floor(target_fpr * len(flat)))  # how many may lie above the threshold
    return float(flat[len(flat) - 1 - allowed])


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    split = category_split(cfg, ctx.dataset, ctx.category)
    model_stage = methods.of(cfg).model_stage
    model = ctx.upstream[model_stage]
    entry: dict[str, Any] = {
        "image": None, "pixel": None, "target_fpr": cfg.evaluate.target_fpr, "n_val": len(split.val),
        "rule": RULE, "method": cfg.method, "pool_size": cfg.evaluate.pool_size, "model_key": model.key,
        "chosen_on": "validation share of the normal training images (data.val_fraction)", "reason": None,
    }
    if not split.val:
        entry["reason"] = f"no validation images (data.val_fraction={cfg.data.val_fraction})"
    else:
        detector = methods.load_detector(ctx.upstream_path(model_stage), ctx.device, cfg)
        maps, scores = [], []
        batches = TestBatches(split.val, cfg.evaluate.batch_size, detector.image_size)
        for batch in prefetch(batches, range(len(batches)), ctx.device, cfg.runtime.loader_workers):
            batch_maps, batch_scores = detector.score(to_tensor(batch, ctx.device))
            maps.append(batch_maps.float().cpu().numpy())
            scores.append(batch_scores.float().cpu().numpy())
        image, pixel = np.concatenate(scores), np.concatenate(maps)
        entry["image"] = threshold_at(image, cfg.evaluate.target_fpr)
        entry["pixel"] = threshold_at(pixel, cfg.evaluate.target_fpr)
        entry["val_fpr_image"] = float((image > entry["image"]).mean())
        entry["val_fpr_pixel"] = float((pixel > entry["pixel"]).mean())
    (ctx.workdir / THRESHOLDS).write_text(json.dumps(entry, indent=1))
    return {"thresholds": entry, "model": model.to_dict()}


# ---------------------------------------------------------------- finding them again


def read_thresholds(artifact: str | Path) -> dict[str, Any]:
    """The ``thresholds`` entry of a calibrate artifact folder."""
    return json.loads((Path(artifact) / THRESHOLDS).read_text())


def calibration_of(model: str | Path) -> Path | None:
    """The calibrate artifact of a model artifact folder (or of its model file) in a local store, or None.

    Store layout ``<root>/<stage>/<dataset>/<category>/<key>``: the calibrate artifacts of the same category
    whose manifest names this model's key; the newest where several target rates calibrated it.
    """
    folder = Path(model)
    folder = folder if folder.is_dir() else folder.parent
    if (folder / THRESHOLDS).is_file():  # a calibrate artifact itself
        return folder
    if len(folder.parts) < 5:
        return None
    root, dataset, category, key = folder.parents[3], folder.parents[1].name, folder.parent.name, folder.name
    found = []
    for manifest in (root / NAME / dataset / category).glob(f"*/{MANIFEST}"):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if data.get("meta", {}).get("model", {}).get("key") == key:
            found.append((data.get("created", ""), manifest.parent))
    return max(found)[1] if found else None


def model_of(calibration: str | Path) -> str:
    """The model artifact folder a calibrate artifact calibrated (from its manifest)."""
    manifest = json.loads((Path(calibration) / MANIFEST).read_text())
    return manifest["meta"]["model"]["path"]


def thresholds_for(model: str | Path) -> dict[str, Any] | None:
    """The ``thresholds`` entry of a model artifact (its calibrate artifact found beside it), of a model file,
    or of a calibrate artifact; None where there is none. ``image`` and ``pixel`` are null (with ``reason``)
    where the model had no validation images."""
    found = calibration_of(model)
    return read_thresholds(found) if found is not None else None


def model_and_thresholds(model: str | Path) -> tuple[str, dict[str, Any] | None]:
    """The model artifact to load and its stored thresholds (None when it has none): ``model`` is a model
    artifact (or its model file), whose calibrate artifact is found beside it, or a calibrate artifact."""
    found = calibration_of(model)
    if found is None:
        return str(model), None
    thresholds = read_thresholds(found)
    model_path = model_of(found) if Path(model).resolve() == found.resolve() else str(model)
    return model_path, thresholds if thresholds.get("image") is not None else None


def score_as_calibrated(detector: Any, thresholds: dict[str, Any] | None) -> Any:
    """The detector scoring images as its thresholds were set (RealNet's pooling: ``pool_size``)."""
    if thresholds is not None and hasattr(detector, "pool") and thresholds.get("pool_size"):
        detector.pool = int(thresholds["pool_size"])
    return detector
