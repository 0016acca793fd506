"""``realnet report``: one self-contained HTML page of a store's evaluations, every image inlined.

Per category and method (the newest evaluation of each): the metrics beside the paper's numbers, the ROC
curve, the score histograms of normal and anomalous images with the stored threshold, the worst false
positives and false negatives with their heat maps, and the synthetic anomalies the model trained on (the
PNG pictures its model artifact and its SIA artifact hold). No script, no external link: the page opens
anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from flows.reports import comparison
from realnet_core.data.errors import DatasetError
from realnet_core.data.images import load_batch
from realnet_core.viz import overlay
from storage.arrays import open_image_array
from storage.store import MANIFEST, Store
from storage.tables import read_table

WORST = 4  # false positives and false negatives shown per evaluation
TILE = 128  # pixels of one heat-map tile
METRIC_COLUMNS = ["method", "dataset", "category", "image_auroc", "image_auroc_paper", "pixel_auroc",
                  "pixel_auroc_paper", "pro", "pro_paper", "image_threshold", "precision", "recall", "f1", "fpr",
                  "test_f1_max", "null_reason"]


@dataclass
class Evaluation:
    """One evaluate artifact: its metrics row, scores and folder, and its manifest."""

    path: Path
    manifest: dict[str, Any]
    metrics: pd.Series
    scores: pd.DataFrame

    @property
    def title(self) -> str:
        m = self.metrics
        return f"{m.get('method', 'realnet')} · {m['dataset']}/{m['category']}"

    def upstream(self, stage: str) -> Path | None:
        ref = self.manifest.get("meta", {}).get("upstream", {}).get(stage)
        return Path(ref["path"]) if ref and Path(ref["path"]).is_dir() else None


def evaluations(root: str, datasets: list[str] | None = None, categories: list[str] | None = None) -> list[Evaluation]:
    """The newest complete evaluate artifact of each (method, dataset, category) in a local store."""
    store = Store(root)
    newest: dict[tuple[str, str, str], tuple[str, Evaluation]] = {}
    for ref in store.list(stage="evaluate"):
        if store.damage(ref) is not None or (datasets and ref.dataset not in datasets) \
                or (categories and ref.category not in categories):
            continue
        folder = Path(ref.path)
        manifest = json.loads((folder / MANIFEST).read_text())
        metrics = read_table(folder / "metrics.parquet").iloc[0]
        ev = Evaluation(folder, manifest, metrics, read_table(folder / "scores.parquet"))
        key = (str(metrics.get("method", "realnet")), ref.dataset, ref.category)
        if key not in newest or manifest["created"] > newest[key][0]:
            newest[key] = (manifest["created"], ev)
    return [ev for _, (_, ev) in sorted(newest.items())]


# ---------------------------------------------------------------- pictures


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("cannot encode a report image as PNG")
    return _data_uri(buf.tobytes())


def _figure(draw) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=90)
    try:
        draw(ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return _data_uri(buf.getvalue())


def roc_figure(ev: Evaluation) -> str | None:
    from sklearn.metrics import roc_curve

    labels, scores = ev.scores["label"].to_numpy(), ev.scores["score"].to_numpy()
    if labels.min() == labels.max():
        return None
    fpr, tpr, _ = roc_curve(labels, scores)

    def draw(ax):
        ax.plot(fpr, tpr, lw=2, label=f"image AUROC {ev.metrics['image_auroc']:.3f}")
        ax.plot([0, 1], [0, 1], ls=":", c="grey")
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title="ROC (test images)")
        ax.legend(loc="lower right", fontsize=8)

    return _figure(draw)


def histogram_figure(ev: Evaluation) -> str:
    scores, labels = ev.scores["score"].to_numpy(), ev.scores["label"].to_numpy()
    threshold = ev.metrics.get("image_threshold")
    bins = np.linspace(scores.min(), scores.max() + 1e-9, 21)

    def draw(ax):
        for label, name, colour in ((0, "normal", "tab:green"), (1, "anomalous", "tab:red")):
            if (labels == label).any():
                ax.hist(scores[labels == label], bins=bins, alpha=0.6, color=colour, label=name)
        if threshold is not None and np.isfinite(threshold):
            ax.axvline(threshold, c="k", ls="--", label=f"threshold {threshold:.3f}")
        ax.set(xlabel="image score", ylabel="images", title="score histogram")
        ax.legend(fontsize=8)

    return _figure(draw)


def worst_cases(ev: Evaluation) -> dict[str, list[tuple[str, str]]]:
    """The highest-scoring normal images (false positives first) and lowest-scoring anomalous ones, each as
    (caption, image | heat map) data URIs."""
    maps = open_image_array(ev.path / "maps.zarr", name="maps") if (ev.path / "maps.zarr").exists() else None
    s = ev.scores.reset_index(drop=True)
    picks = {"false positives (normal, highest scores)": s[s.label == 0].sort_values("score", ascending=False),
             "false negatives (anomalous, lowest scores)": s[s.label == 1].sort_values("score")}
    out: dict[str, list[tuple[str, str]]] = {}
    for title, rows in picks.items():
        rows = rows.head(WORST)
        tiles = []
        try:
            images = load_batch(list(rows.path), TILE) if len(rows) else []
        except DatasetError as exc:  # the dataset moved since evaluation: say so instead of failing the page
            out[title] = [(f"images not readable now: {exc}", _png(np.full((8, 8, 3), 200, np.uint8)))]
            continue
        for img, (i, row) in zip(images, rows.iterrows(), strict=True):
            amap = np.asarray(maps[i], np.float32) if maps is not None else np.zeros((TILE, TILE), np.float32)
            amap = cv2.resize(amap, (TILE, TILE), interpolation=cv2.INTER_LINEAR)
            decision = row["decision"] if "decision" in row and isinstance(row["decision"], str) else "no threshold"
            caption = f"{Path(row.path).name} ({row.defect}): score {row.score:.3f}, {decision}"
            tiles.append((caption, _png(np.concatenate([img, overlay(img, amap)], axis=1))))
        out[title] = tiles
    return out


def synthetic_pictures(ev: Evaluation) -> list[tuple[str, str]]:
    """The PNG pictures of the model artifact and of its SIA artifact (what the model trained on)."""
    upstream = ev.manifest.get("meta", {}).get("upstream", {})
    model_stage = next((s for s, r in upstream.items() if r.get("key") == ev.metrics.get("model_key")), None)
    model = ev.upstream(model_stage) if model_stage else None
    folders = [model] if model else []
    if model is not None:
        meta = json.loads((model / MANIFEST).read_text()).get("meta", {})
        sia = meta.get("upstream", {}).get("generate_sia")
        if sia and Path(sia["path"]).is_dir():
            folders.append(Path(sia["path"]))
    return [(f"{p.parents[3].name}: {p.name}", _data_uri(p.read_bytes()))
            for folder in folders for p in sorted(folder.glob("*.png"))]


# ---------------------------------------------------------------- page


CSS = """body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}
figure{display:inline-block;margin:4px;vertical-align:top}figcaption{font-size:12px;max-width:300px}
section{border-top:2px solid #888;margin-top:2em}img{image-rendering:pixelated}"""


def _table(metrics: pd.DataFrame) -> str:
    table = comparison(metrics)
    for col in metrics.columns.difference(table.columns):
        table[col] = metrics[col]
    if "null_reason" in table:
        table["null_reason"] = table["null_reason"].fillna("")
    cols = [c for c in METRIC_COLUMNS if c in table.columns]
    return table[cols].to_html(index=False, na_rep="null", float_format=lambda v: f"{v:.4g}", escape=True,
                               classes="metrics")


def _figures(items: list[tuple[str, str]]) -> str:
    return "".join(f'<figure><img src="{uri}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}</figcaption>'
                   "</figure>" for c, uri in items)


def render(evs: list[Evaluation]) -> str:
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>RealNet pipeline report</title>"
             f"<style>{CSS}</style></head><body><h1>RealNet pipeline report</h1>"]
    if not evs:
        parts.append("<p>No evaluation in this store yet: run <code>realnet run</code> first.</p></body></html>")
        return "".join(parts)
    metrics = pd.DataFrame([ev.metrics for ev in evs]).reset_index(drop=True)
    parts.append("<h2>Metrics (AUROC and PRO in percent, beside the paper's)</h2>"
                 "<p>Thresholds were set on held-back normal images at the target false-positive rate; "
                 "<code>test_f1_max</code> is chosen on the test set, for diagnosis only.</p>")
    parts.append(_table(metrics))
    for ev in evs:
        parts.append(f"<section><h2>{html.escape(ev.title)}</h2>")
        charts = [("score histogram with the threshold", histogram_figure(ev))]
        roc = roc_figure(ev)
        if roc:
            charts.insert(0, ("ROC curve", roc))
        parts.append(_figures(charts))
        for title, tiles in worst_cases(ev).items():
            parts.append(f"<h3>{html.escape(title)}</h3>" + (_figures(tiles) or "<p>none</p>"))
        pictures = synthetic_pictures(ev)
        parts.append("<h3>synthetic anomalies the model trained on</h3>" + (_figures(pictures) or "<p>none stored</p>"))
        parts.append("</section>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(root: str, out: str | Path, datasets: list[str] | None = None,
                 categories: list[str] | None = None) -> Path:
    """Write the page for the store at ``root`` (a local folder) to ``out``; written whole, then renamed."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(evaluations(root, datasets, categories)), encoding="utf-8")
    tmp.replace(path)
    return path
