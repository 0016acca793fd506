"""Two methods' results for the same category stand side by side, each beside its own paper's numbers."""

from __future__ import annotations

import time

import pandas as pd

from flows.reports import comparison
from stages import methods, tables
from storage.store import Store
from storage.tables import write_table


def _evaluate(store: Store, key: str, model_stage: str, image_auroc: float) -> None:
    row = {"dataset": "demo", "category": "brick", "image_auroc": image_auroc, "pixel_auroc": 0.5, "pro": 0.5,
           "method": methods.owner(model_stage).name}
    with store.build(store.ref("evaluate", "demo", "brick", key), {"upstream": {model_stage: {}}}) as staging:
        write_table(pd.DataFrame([row]), staging / "metrics.parquet")
    time.sleep(0.01)  # distinct `created` times


def test_the_metrics_table_keeps_the_newest_row_of_each_method(tmp_path):
    store = Store(str(tmp_path))
    _evaluate(store, "old-realnet", "train_realnet", 0.1)
    _evaluate(store, "simplenet", "train_simplenet", 0.2)
    _evaluate(store, "new-realnet", "train_realnet", 0.3)  # a rerun after a config change replaces the old row
    df = tables.load("metrics", str(tmp_path)).sort_values("method")
    assert df[["method", "image_auroc"]].values.tolist() == [["realnet", 0.3], ["simplenet", 0.2]]


def test_the_paper_comparison_shows_simplenets_published_numbers():
    ours = pd.DataFrame([{"dataset": "mvtec", "category": "capsule", "image_auroc": 0.95, "pixel_auroc": 0.97,
                          "pro": 0.9, "method": m} for m in ("realnet", "simplenet")])
    table = comparison(ours).set_index("method")
    assert table.loc["simplenet", "image_auroc_paper"] == 97.7  # SimpleNet's Table 1, capsule
    assert table.loc["simplenet", "pixel_auroc_paper"] == 98.9
    assert pd.isna(table.loc["simplenet", "pro_paper"]), "SimpleNet's paper reports no PRO"
    assert table.loc["realnet", "image_auroc_paper"] == 99.56
    assert table.loc["simplenet", "image_auroc_diff"] == round(95.0 - 97.7, 2)
