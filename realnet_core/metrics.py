"""Evaluation metrics: image-level AUROC, pixel-level AUROC and the MVTec-AD AUPRO ("PRO").

``pro`` follows the MVTec-AD reference evaluation: ground-truth regions are the 8-connected
components of each mask; for every distinct score threshold t the per-region overlap is the
fraction of the region's pixels with score >= t, PRO(t) is its mean over all regions of all images,
and FPR(t) is the fraction of all normal pixels with score >= t. The PRO-over-FPR curve is
integrated with the trapezoid rule from 0 to ``fpr_limit`` (linearly interpolated at the limit) and
divided by ``fpr_limit``. The curve is exact (no threshold grid to choose, no loop over
thresholds): only the anomalous-region pixels are sorted, and the normal pixels are counted into
the buckets between consecutive region scores, which keeps 100 images of 256x256 to a few seconds
and a few hundred MB.

Inputs may be numpy arrays or torch tensors. Masks are binarised with ``> 0.5`` (bool, {0, 1} and
{0, 255} masks all work); ``(N, 1, H, W)`` and ``(N, H, W)`` are both accepted, as is one ``(H, W)`` map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor; avoid importing torch just to check the type
        x = x.detach().cpu()
        if x.is_floating_point() and x.element_size() < 4:
            x = x.float()  # numpy has no bfloat16
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object:
        raise ValueError(f"{name} must be a numeric array, got dtype object")
    return arr


def _scores(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _image_stack(x: Any, name: str) -> np.ndarray:
    """Bring masks or maps to ``(N, H, W)``."""
    arr = _to_numpy(x, name)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W), (N, 1, H, W) or (H, W); got {arr.shape}")
    return arr


def _masks_and_maps(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    m = _image_stack(masks, "masks") > 0.5
    a = _scores(_image_stack(maps, "maps"), "maps")
    if m.shape != a.shape:
        raise ValueError(f"masks and maps differ in shape: {m.shape} vs {a.shape}")
    if not m.any():
        raise ValueError("masks contain no anomalous pixel: the metric is undefined with one class")
    if m.all():
        raise ValueError("masks contain no normal pixel: the metric is undefined with one class")
    return m, a


# scikit-learn and scipy are imported on first use: together about 1.4 s that a fully cached rerun,
# which computes no metric, should not pay.


def _roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def _label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    return ndimage.label(mask, structure=_EIGHT_CONNECTED)


def image_auroc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve of per-image scores against labels (1 = anomalous)."""
    y = _to_numpy(labels, "labels").reshape(-1)
    s = _scores(scores, "scores").reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("labels contain only one class: image AUROC needs normal and anomalous images")
    return _roc_auc(y, s)


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Area under the ROC curve over all pixels of all images."""
    m, a = _masks_and_maps(masks, maps)
    return _roc_auc(m.reshape(-1), a.reshape(-1))


def pixel_auroc_by_defect(masks: Any, maps: Any, defects: Sequence[str]) -> dict[str, float]:
    """Pixel AUROC of each defect kind: its images' anomalous pixels against the normal pixels of all images.

    Which kinds a method misses is hidden in the pooled pixel AUROC, which weights kinds by their area.
    """
    m, a = _masks_and_maps(masks, maps)
    kinds = np.asarray(list(defects))
    if kinds.shape != (len(m),):
        raise ValueError(f"{len(kinds)} defect names for {len(m)} maps")
    normal, has_defect = a[~m], m.reshape(len(m), -1).any(axis=1)
    out = {}
    for kind in sorted(set(kinds[has_defect].tolist())):
        pos = a[kinds == kind][m[kinds == kind]]
        out[kind] = _roc_auc(np.r_[np.zeros(len(normal), bool), np.ones(len(pos), bool)], np.r_[normal, pos])
    return out


def pro_curve(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """The exact (FPR, PRO) curve as a polyline from (0, 0) to (1, 1), FPR non-decreasing.

    Its vertices are the points at every distinct score threshold, except that runs of collinear
    points are merged: between two consecutive distinct scores found in anomalous regions only FPR
    moves (a horizontal run), so the curve needs just the two points around each such score, the
    state with pixels strictly above it and with pixels at or above it (ties cross together). This
    gives the same area as the full per-threshold curve, without sorting the normal pixels.
    """
    m, a = _masks_and_maps(masks, maps)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
    # Per-pixel weight 1 / (n_regions * region_size): the sum of the weights of the region pixels
    # above a threshold is then exactly the mean per-region overlap at that threshold.
    region_scores, region_weights, n_regions = [], [], 0
    for i in range(m.shape[0]):
        if not m[i].any():
            continue
        labels, n = _label_regions(m[i])
        n_regions += n
        sizes = np.bincount(labels.reshape(-1), minlength=n + 1)
        inside = labels > 0
        region_scores.append(a[i][inside])
        region_weights.append(1.0 / sizes[labels[inside]])
    scores = np.concatenate(region_scores)
    weights = np.concatenate(region_weights) / n_regions
    order = np.argsort(scores)
    scores, weights = scores[order], weights[order]
    # Distinct region scores r (ascending) and PRO(t >= r) = weight of region pixels scoring >= r.
    starts = np.flatnonzero(np.concatenate(([True], scores[1:] != scores[:-1])))
    r = scores[starts]
    pro_at = np.cumsum(weights[::-1])[::-1][starts]  # suffix sums: weight at or above each score
    pro_above = np.append(pro_at[1:], 0.0)  # strictly above r_k means at or above r_{k+1}

    # Normal pixels are only bucketed between consecutive region scores, never sorted.
    normal = a[~m]
    n_normal = normal.size
    k = len(r)
    at_or_below = np.searchsorted(r, normal, side="right")  # number of r <= v
    tie = np.zeros(n_normal, dtype=bool)
    has = at_or_below > 0
    tie[has] = r[at_or_below[has] - 1] == normal[has]
    below = at_or_below - tie  # number of r < v
    # FP(t >= r_k) counts normal v with (number of r <= v) >= k + 1; suffix sums over the buckets.
    fp_at = np.cumsum(np.bincount(at_or_below, minlength=k + 1)[::-1])[::-1][1:]
    fp_above = np.cumsum(np.bincount(below, minlength=k + 1)[::-1])[::-1][1:]

    # Descending thresholds: for each region score, the point above it, then the point at it.
    fpr = np.empty(2 * k + 2)
    pro_values = np.empty(2 * k + 2)
    fpr[0] = pro_values[0] = 0.0
    fpr[1:-1:2], fpr[2:-1:2] = fp_above[::-1] / n_normal, fp_at[::-1] / n_normal
    pro_values[1:-1:2], pro_values[2:-1:2] = pro_above[::-1], pro_at[::-1]
    fpr[-1] = pro_values[-1] = 1.0
    np.minimum(pro_values, 1.0, out=pro_values)  # summation error could nudge past 1
    return fpr, pro_values


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max], y linearly interpolated at x_max."""
    i = int(np.searchsorted(x, x_max, side="right"))  # first point beyond the limit
    if i < len(x):
        y_max = y[i - 1] + (y[i] - y[i - 1]) * (x_max - x[i - 1]) / (x[i] - x[i - 1])
        x = np.append(x[:i], x_max)
        y = np.append(y[:i], y_max)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def pro(masks: Any, maps: Any, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (the MVTec-AD AUPRO), in [0, 1]."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro_values = pro_curve(masks, maps)
    return _trapezoid_to(fpr, pro_values, fpr_limit) / fpr_limit


def image_scores(maps: Any, pool: int = 16) -> Any:
    """Image scores: the max of each anomaly map after ``pool`` x ``pool`` average pooling, stride 1.

    Stride 1 (the authors' evaluation) looks at every window position, so a small defect is not split
    across two cells; the kernel shrinks to the map's shorter side for smaller maps. (B, H, W) or
    (B, 1, H, W) tensor -> (B,) float32 tensor. Evaluate, predict and the bench all score with it.
    """
    import torch.nn.functional as F

    if maps.dim() == 3:
        maps = maps.unsqueeze(1)
    if maps.dim() != 4 or maps.shape[1] != 1:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) maps, got {tuple(maps.shape)}")
    k = min(pool, maps.shape[-1], maps.shape[-2])
    return F.avg_pool2d(maps.float(), k, stride=1).flatten(1).amax(1)


def decision_metrics(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and false-positive rate of the decision ``score > threshold`` (1 = defect).

    A rate whose denominator is empty (no anomalous images for recall, no normal ones for the FPR, no
    defect decision for precision) is NaN rather than a number that looks measured.
    """
    from sklearn.metrics import confusion_matrix

    y = _to_numpy(labels, "labels").reshape(-1).astype(bool)
    pred = _scores(scores, "scores").reshape(-1) > threshold
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[False, True]).ravel()

    def rate(num: int, den: int) -> float:
        return float(num / den) if den else float("nan")

    precision, recall = rate(tp, tp + fp), rate(tp, tp + fn)
    f1 = rate(2 * tp, 2 * tp + fp + fn) if y.any() else float("nan")
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": rate(fp, fp + tn)}


def f1_max(labels: Any, scores: Any) -> tuple[float, float]:
    """``(best F1, its threshold)`` over every threshold on these scores: a threshold chosen on labelled
    data, so on a test set it is a diagnosis (how good a threshold could be), never a decision rule."""
    from sklearn.metrics import precision_recall_curve

    y = _to_numpy(labels, "labels").reshape(-1).astype(bool)
    precision, recall, thresholds = precision_recall_curve(y, _scores(scores, "scores").reshape(-1))
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    # precision_recall_curve decides score >= t; the stored rule is score > t, so report the score just below.
    below = _scores(scores, "scores").reshape(-1)
    below = below[below < thresholds[best]]
    return float(f1[best]), float(below.max()) if below.size else float(thresholds[best]) - 1e-6
