"""Stage 5: evaluate on the test split: anomaly maps, image and pixel AUROC, PRO, and the decisions.

Outputs ``metrics.parquet`` (one row), ``scores.parquet`` (one row per test image, with its decision at the
stored threshold), ``maps.zarr`` (float16 anomaly maps at the model input size), ``overlays/``
(image | ground truth | heat map) and ``seen_anomalies.parquet``: the anomalous test images held out for
training (``data.seen_anomalies``), which the test split here no longer holds.

A metric the test set cannot support (image AUROC without anomalous images, pixel AUROC and PRO without
masks) is null, and ``null_reason`` says why. The decisions use the calibrate stage's thresholds, set on
validation images; the F1-max threshold, chosen on this test set, is reported for diagnosis only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from realnet_core import metrics
from realnet_core.config import Config
from realnet_core.data.folders import metric_support
from realnet_core.data.images import load_batch
from realnet_core.viz import triptych, write_png
from stages import calibrate, methods
from stages.common import StageContext
from stages.inputs import category_split, seen_anomalies, test_fingerprint, test_masks, to_tensor
from stages.loaders import TestBatches, prefetch
from storage.arrays import write_float_maps
from storage.tables import write_table

NAME = "evaluate"
VERSION = "3"
F1_MAX_NOTE = "chosen on the test set: a diagnosis only, never the decision threshold"
TABLES = ("metrics", "scores", "seen_anomalies")
# The backbone file is the one the model artifact names, already in its stage's fingerprint.
FILES: tuple[str, ...] = ()
MEMORY_HINT = "a smaller evaluate.batch_size"


def key_config(cfg: Config) -> dict[str, Any]:
    return {"evaluate": cfg.section("evaluate"), "image_size": cfg.data.image_size}


def fingerprint(cfg: Config, dataset: str, category: str) -> str:
    return test_fingerprint(cfg, dataset, category)


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.evaluate
    split = category_split(ctx.cfg, ctx.dataset, ctx.category)
    if not split.test:
        raise ValueError(f"{split.root}/{split.category}: no test images to evaluate")
    model_stage = methods.of(ctx.cfg).model_stage
    detector = methods.load_detector(ctx.upstream_path(model_stage), ctx.device, ctx.cfg)
    size = detector.image_size
    masks = test_masks(split, size)
    maps = np.zeros((len(split.test), size, size), np.float32)
    scores = np.zeros(len(split.test), np.float32)
    bar = ctx.progress(len(split.test), "evaluate", unit="img")
    t0 = time.perf_counter()
    batches = TestBatches([s.path for s in split.test], cfg.batch_size, size)
    lo = 0
    for batch in prefetch(batches, range(len(batches)), ctx.device, ctx.cfg.runtime.loader_workers):
        imgs = to_tensor(batch, ctx.device)
        batch_maps, batch_scores = detector.score(imgs)
        maps[lo: lo + len(imgs)] = batch_maps.cpu().numpy()
        scores[lo: lo + len(imgs)] = batch_scores.cpu().numpy()
        lo += len(imgs)
        bar.update(len(imgs))
    bar.close()
    seconds = time.perf_counter() - t0
    labels = np.array([s.label for s in split.test])
    support = metric_support(split)
    thresholds = calibrate.read_thresholds(ctx.upstream_path("calibrate"))
    if thresholds["image"] is None:
        support["threshold"] = support["precision_recall"] = support["fpr"] = thresholds["reason"]

    row = {
        "dataset": ctx.dataset, "category": ctx.category,
        **_ranking_metrics(support, labels, scores, masks, maps, cfg.pro_fpr_limit),
        **_decision_metrics(support, labels, scores, thresholds),
        "null_reason": "; ".join(f"{k}: {v}" for k, v in support.items() if v) or None,
        "n_test": len(labels), "n_anomalous": int(labels.sum()), "n_normal": int((labels == 0).sum()),
        "n_val": len(split.val), "images_per_s": len(labels) / max(seconds, 1e-9),
        "seen_anomalies": ctx.cfg.data.seen_anomalies,
        "method": ctx.cfg.method, "model_key": ctx.upstream[model_stage].key, "evaluate_key": ctx.ref.key,
    }
    write_table(pd.DataFrame([row]), ctx.workdir / "metrics.parquet")
    threshold = thresholds["image"]
    write_table(pd.DataFrame({
        "dataset": ctx.dataset, "category": ctx.category,
        "path": [s.path for s in split.test], "label": labels, "defect": [s.defect for s in split.test],
        "score": scores.astype(np.float64),
        "threshold": np.nan if threshold is None else float(threshold),
        "decision": None if threshold is None else np.where(scores > threshold, "defect", "ok"),
    }), ctx.workdir / "scores.parquet")
    seen = seen_anomalies(ctx.cfg, ctx.dataset, ctx.category)
    write_table(pd.DataFrame({"dataset": ctx.dataset, "category": ctx.category, "path": [s.path for s in seen],
                              "defect": [s.defect for s in seen]}, columns=["dataset", "category", "path", "defect"]),
                ctx.workdir / "seen_anomalies.parquet")
    write_float_maps(ctx.workdir / "maps.zarr", maps)
    _overlays(ctx, split, masks, maps, scores, size)
    # The manifest is JSON: a metric the test set cannot support is null there too.
    return {k: None if isinstance(row[k], float) and np.isnan(row[k]) else row[k]
            for k in ("image_auroc", "pixel_auroc", "pro", "n_test", "image_threshold", "f1", "fpr")}


def _ranking_metrics(support: dict[str, str | None], labels: np.ndarray, scores: np.ndarray, masks: np.ndarray,
                     maps: np.ndarray, pro_fpr_limit: float) -> dict[str, Any]:
    """Threshold-free metrics; NaN (null in the table) where ``support`` gives a reason."""
    nan = float("nan")
    image = metrics.image_auroc(labels, scores) if support["image_auroc"] is None else nan
    if support["pixel_auroc"] is None:
        pixel, pro = metrics.pixel_auroc(masks, maps), metrics.pro(masks, maps, fpr_limit=pro_fpr_limit)
    else:
        pixel = pro = nan
    out: dict[str, Any] = {"image_auroc": image, "pixel_auroc": pixel, "pro": pro,
                           "test_f1_max": nan, "test_f1_max_threshold": nan, "test_f1_max_note": None}
    if support["image_auroc"] is None:
        out["test_f1_max"], out["test_f1_max_threshold"] = metrics.f1_max(labels, scores)
        out["test_f1_max_note"] = F1_MAX_NOTE
    return out


def _decision_metrics(support: dict[str, str | None], labels: np.ndarray, scores: np.ndarray,
                      thresholds: dict[str, Any]) -> dict[str, Any]:
    """Precision, recall, F1 and FPR at the stored image threshold, and the thresholds themselves."""
    nan = float("nan")
    out: dict[str, Any] = {"image_threshold": nan, "pixel_threshold": nan, "target_fpr": thresholds["target_fpr"],
                           "precision": nan, "recall": nan, "f1": nan, "fpr": nan}
    if thresholds["image"] is None:
        return out
    out["image_threshold"], out["pixel_threshold"] = float(thresholds["image"]), float(thresholds["pixel"])
    out.update(metrics.decision_metrics(labels, scores, thresholds["image"]))
    return out


def _overlays(ctx: StageContext, split, masks, maps, scores, size) -> None:
    """The highest-scoring anomalous, lowest-scoring anomalous and highest-scoring normal images."""
    n = ctx.cfg.evaluate.overlays
    if n == 0:
        return
    out = ctx.workdir / "overlays"
    out.mkdir(exist_ok=True)
    labels = np.array([s.label for s in split.test])
    order = np.argsort(-scores)
    bad, good = [i for i in order if labels[i]], [i for i in order if not labels[i]]
    pick = list(dict.fromkeys(bad[: n // 2] + bad[::-1][: n // 4] + good[: n - n // 2 - n // 4]))
    vmax = float(max(maps.max(), 1e-6))
    images = load_batch([split.test[i].path for i in pick], size)
    for img, i in zip(images, pick, strict=True):
        s = split.test[i]
        name = f"{s.defect}_{Path(s.path).stem}_score{scores[i]:.3f}.png"  # findable: hole/000.png -> hole_000_
        write_png(out / name, triptych(img, masks[i], maps[i], vmax=vmax))
