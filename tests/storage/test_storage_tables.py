import os
import time

import pandas as pd
import pytest

from storage.store import Store, StoreError
from storage.tables import ID_COLUMNS, load, read_table, write_table


def test_write_read_round_trip_leaves_no_temp(tmp_path):
    df = pd.DataFrame({"layer": [1, 2], "loss": [0.5, 0.25], "selected": [True, False]})
    write_table(df, tmp_path / "afs.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "afs.parquet"), df)
    assert os.listdir(tmp_path) == ["afs.parquet"]


def _publish(store, stage, dataset, category, key, tables):
    with store.build(store.ref(stage, dataset, category, key), {}) as staging:
        for name, df in tables.items():
            write_table(df, staging / f"{name}.parquet")
    time.sleep(0.002)  # distinct `created` stamps


def test_load_across_datasets_and_categories_with_latest(tmp_path):
    root = str(tmp_path / "artifacts")
    store = Store(root)
    _publish(store, "evaluate", "mvtec", "bottle", "old", {"metrics": pd.DataFrame({"auroc": [0.5]})})
    _publish(store, "evaluate", "mvtec", "bottle", "new", {"metrics": pd.DataFrame({"auroc": [0.9]})})
    _publish(store, "evaluate", "visa", "candle", "v1", {"metrics": pd.DataFrame({"auroc": [0.8]})})
    _publish(store, "train_realnet", "mvtec", "bottle", "t1", {"metrics": pd.DataFrame({"auroc": [0.1]})})
    _publish(store, "select_features", "mvtec", "bottle", "a1", {"afs": pd.DataFrame({"loss": [1.0]})})
    # An unfinished artifact (no manifest) must never show up.
    os.makedirs(tmp_path / "artifacts" / "evaluate" / "mvtec" / "cable" / "x")
    write_table(pd.DataFrame({"auroc": [0.0]}), tmp_path / "artifacts/evaluate/mvtec/cable/x/metrics.parquet")

    df = load("metrics", root, stage="evaluate")
    assert list(df.columns) == [*ID_COLUMNS, "auroc"]
    assert df[["dataset", "category", "artifact_key", "auroc"]].values.tolist() == [
        ["mvtec", "bottle", "new", 0.9],
        ["visa", "candle", "v1", 0.8],
    ]
    everything = load("metrics", root, latest=False)
    assert sorted(everything["artifact_key"]) == ["new", "old", "t1", "v1"]
    assert set(load("metrics", root)["stage"]) == {"evaluate", "train_realnet"}
    assert load("afs", root)["loss"].tolist() == [1.0]


def test_existing_id_columns_are_kept(tmp_path):
    root = str(tmp_path / "a")
    table = pd.DataFrame({"category": ["from-table"], "v": [1]})
    _publish(Store(root), "evaluate", "mvtec", "bottle", "k", {"scores": table})
    df = load("scores", root)
    assert df["category"].tolist() == ["from-table"] and df["artifact_key"].tolist() == ["k"]


def test_empty_and_missing_roots(tmp_path):
    (tmp_path / "empty").mkdir()
    df = load("metrics", str(tmp_path / "empty"))
    assert df.empty and list(df.columns) == ID_COLUMNS
    with pytest.raises(StoreError, match="nowhere"):
        load("metrics", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="table"):
        load("../metrics", str(tmp_path / "empty"))


def test_a_typo_in_the_table_name_or_a_file_as_root_is_an_error_not_an_empty_table(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"unknown table 'metric'; tables: metrics, scores"):
        load("metric", str(tmp_path / "empty"), known=("metrics", "scores"))
    (tmp_path / "notes.txt").write_text("not an artifact root")
    with pytest.raises(StoreError, match="notes.txt.*is not a folder"):
        load("metrics", str(tmp_path / "notes.txt"))


def test_the_stages_name_every_table_and_catch_a_typo(tmp_path):
    from stages.tables import load as load_known
    from stages.tables import table_stages

    assert table_stages() == {"loss_log": "train_diffusion", "afs": "select_features", "train_log": "train_realnet",
                              "simplenet_train_log": "train_simplenet",
                              "prototype_clusters": "prn_prototypes", "prn_train_log": "train_prn",
                              "metrics": "evaluate", "scores": "evaluate", "seen_anomalies": "evaluate"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"unknown table 'metric'; tables: loss_log, afs, train_log, .*metrics"):
        load_known("metric", str(tmp_path / "empty"))
