"""Own parts end to end: a folder of real photographs gives a trained model, a threshold and decisions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from own_parts._parts import TINY, TREE_NAME, plain_overrides

from storage.tables import load

pytestmark = pytest.mark.slow


def _metrics(store, category) -> pd.Series:
    rows = load("metrics", str(store["root"]))
    return rows[rows.category == category].iloc[0]


def _artifact(store, stage, category) -> Path:
    return next((Path(store["root"]) / stage / "folder" / category).iterdir())


def test_plain_folders_with_masks_give_every_metric_and_decisions_at_the_stored_threshold(parts_store):
    m = _metrics(parts_store, "plain")
    assert all(0 <= m[k] <= 1 for k in ("image_auroc", "pixel_auroc", "pro", "recall", "f1", "fpr")), m
    # Precision is undefined (null) only where nothing was called a defect, a tiny model's usual case.
    assert 0 <= m.precision <= 1 or math.isnan(m.precision) and m.recall == 0 and m.fpr == 0
    assert m.null_reason is None and m.n_anomalous == 6 and m.n_val >= 1
    assert m.test_f1_max_note.startswith("chosen on the test set")
    thresholds = json.loads((_artifact(parts_store, "calibrate", "plain") / "thresholds.json").read_text())
    assert m.image_threshold == pytest.approx(thresholds["image"]) and thresholds["val_fpr_image"] <= 0.01
    scores = load("scores", str(parts_store["root"]))
    scores = scores[scores.category == "plain"]
    assert (scores.decision == (scores.score > thresholds["image"]).map({True: "defect", False: "ok"})).all()


def test_a_tree_with_its_own_name_and_no_masks_has_null_pixel_metrics_with_the_reason(parts_store):
    m = _metrics(parts_store, TREE_NAME)
    assert 0 <= m.image_auroc <= 1 and math.isnan(m.pixel_auroc) and math.isnan(m.pro)
    assert "pixel_auroc: no ground-truth masks" in m.null_reason and "pro: no ground-truth masks" in m.null_reason
    assert 0 <= m.recall <= 1 and 0 <= m.fpr <= 1


def test_twenty_normal_images_alone_give_a_model_a_threshold_and_decisions(parts_store, parts, tmp_path, capsys):
    from flows.cli import main

    stages = [(r["stage"], r["status"]) for r in parts_store["summaries"]["normal_only"]["stages"]]
    assert stages == [("select_features", "ran"), ("train_realnet", "ran"), ("calibrate", "ran"), ("evaluate", "ran")]
    m = _metrics(parts_store, "normal_only")
    assert math.isnan(m.image_auroc) and "image_auroc: no anomalous test images" in m.null_reason
    assert m.n_anomalous == 0 and m.n_normal == 4 and m.n_val == 2  # 20 -> 4 held out for testing, 2 of 16 for val
    assert math.isfinite(m.image_threshold) and 0 <= m.fpr <= 1 and math.isnan(m.recall)

    model = _artifact(parts_store, "train_realnet", "normal_only")
    image = sorted((parts["normal_only"] / "normal").glob("*.png"))[0]
    assert main(["predict", "--model", str(model), str(image), "--out", str(tmp_path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["path"] == str(image) and row["decision"] in ("ok", "defect")
    assert row["decision"] == ("defect" if row["score"] > row["threshold"] else "ok")
    assert row["threshold"] == pytest.approx(m.image_threshold) and Path(row["mask"]).is_file()


def test_the_validation_images_are_neither_trained_on_nor_tested(parts):
    from realnet_core.config import load_config
    from stages.inputs import category_split, train_fingerprint

    cfg = load_config("demo", ["data.dataset=folder", *TINY, *plain_overrides(parts["plain"], "plain")])
    split = category_split(cfg, "folder", "plain")
    test = {s.path for s in split.test}
    assert split.val and not set(split.val) & set(split.train) and not set(split.val) & test
    assert len(split.train) + len(split.val) + 4 == 20  # every normal image in exactly one share
    no_val = cfg.model_copy(update={"data": cfg.data.model_copy(update={"val_fraction": 0.0})})
    assert train_fingerprint(no_val, "folder", "plain") != train_fingerprint(cfg, "folder", "plain")


def test_predict_csv_prints_a_header_and_a_row_per_image(parts_store, parts, tmp_path, capsys):
    from flows.cli import PREDICT_COLUMNS, main

    model = _artifact(parts_store, "calibrate", "plain")  # a calibrate artifact names its model
    images = sorted((parts["plain"] / "abnormal").glob("*.png"))[:2]
    assert main(["predict", "--model", str(model), *map(str, images), "--out", str(tmp_path), "--csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ",".join(PREDICT_COLUMNS) and len(lines) == 3
    assert all(line.split(",")[3] in ("ok", "defect") for line in lines[1:])


def test_tables_metrics_json_rows_carry_the_threshold_metrics(parts_store, capsys):
    from flows.cli import main

    assert main(["tables", "metrics", "--artifacts", str(parts_store["root"]), "--json"]) == 0
    rows = {r["category"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"plain", "normal_only", TREE_NAME}
    for key in ("image_threshold", "pixel_threshold", "precision", "recall", "f1", "fpr", "null_reason"):
        assert key in rows["plain"]
