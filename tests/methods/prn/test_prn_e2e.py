"""PRN end to end on tiny demo data: prototypes, training and evaluate through the registry; seeded runs repeat;
a seen anomaly never reaches the evaluated test set."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from realnet_core.config import load_config
from stages import dag, methods
from stages.common import execute
from stages.methods.prn.detector import top_k_scores
from storage.checkpoints import load_checkpoint
from storage.store import Store

TINY_PRN = ["method=prn", "data.image_size=64", "prn.epochs=2", "prn.steps_per_epoch=2", "prn.batch_size=8",
            "prn.msa_layers=1", "prn.top_k=10", "evaluate.overlays=2", "runtime.progress=false",
            "runtime.threads=1"]


def _run(root: Path, store_root: Path, *extra: str) -> dict:
    cfg = load_config("demo", [*TINY_PRN, f"data.roots.demo={root}", *extra])
    store, results = Store(str(store_root)), {}
    for stage in dag.active(cfg):
        ups = {u: results[u].ref for u in dag.upstream(stage, cfg)}
        results[stage] = execute(dag.MODULES[stage], cfg, store, "demo", "brick", ups)
    return {stage: Path(r.ref.path) for stage, r in results.items()}


@pytest.fixture(scope="module")
def prn_runs(demo_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prn")
    return [_run(demo_root, tmp / name, "data.seen_anomalies=2") for name in ("a", "b")]


def test_prn_runs_its_own_stages_without_diffusion(prn_runs):
    assert list(prn_runs[0]) == ["prn_prototypes", "train_prn", "calibrate", "evaluate"]
    out = prn_runs[0]
    clusters = pd.read_parquet(out["prn_prototypes"] / "prototype_clusters.parquet")
    assert set(clusters.layer) == {"layer1", "layer2", "layer3"} and (clusters["size"] > 0).all()
    log = pd.read_parquet(out["train_prn"] / "prn_train_log.parquet")
    assert list(log.epoch) == [1, 2] and np.isfinite(log.loss).all()
    metrics = pd.read_parquet(out["evaluate"] / "metrics.parquet").iloc[0]
    assert metrics["method"] == "prn" and metrics["seen_anomalies"] == 2
    assert 0 <= metrics["image_auroc"] <= 1 and 0 <= metrics["pixel_auroc"] <= 1


def test_a_seen_anomaly_never_reaches_the_evaluated_test_set(prn_runs):
    out = prn_runs[0]
    seen = pd.read_parquet(out["evaluate"] / "seen_anomalies.parquet")
    scores = pd.read_parquet(out["evaluate"] / "scores.parquet")
    assert len(seen) == 2
    assert set(seen.path).isdisjoint(scores.path)
    assert pd.read_parquet(out["evaluate"] / "metrics.parquet").n_test.item() == len(scores)


def test_seeded_runs_repeat(prn_runs):
    a, b = prn_runs
    for stage, name in (("prn_prototypes", "prototypes.pt"), ("train_prn", "prn.pt")):
        sa, sb = load_checkpoint(a[stage] / name), load_checkpoint(b[stage] / name)
        key = "prototypes" if stage == "prn_prototypes" else "state_dict"
        left = sa[key] if isinstance(sa[key], list) else list(sa[key].values())
        right = sb[key] if isinstance(sb[key], list) else list(sb[key].values())
        assert all(torch.equal(x, y) for x, y in zip(left, right, strict=True)), stage
    sa = pd.read_parquet(a["evaluate"] / "scores.parquet")
    sb = pd.read_parquet(b["evaluate"] / "scores.parquet")
    assert np.array_equal(sa.score, sb.score)


def test_the_detector_scores_by_the_top_k_mean(prn_runs, demo_root):
    detector = methods.load_detector(prn_runs[0]["train_prn"], torch.device("cpu"))
    assert detector.image_size == 64 and detector.top_k == 10
    images = torch.rand(2, 3, 64, 64)
    maps, scores = detector.score(images)
    assert maps.shape == (2, 64, 64) and ((maps >= 0) & (maps <= 1)).all()
    expected = torch.stack([m.flatten().sort(descending=True).values[:10].mean() for m in maps])
    assert torch.allclose(scores, expected)
    assert torch.allclose(top_k_scores(maps, 10 ** 6), maps.flatten(1).mean(1))  # a k beyond the map: all pixels


def test_an_image_size_off_the_grid_is_refused(demo_root, tmp_path):
    from realnet_core.config import ConfigError

    with pytest.raises(ConfigError, match="data.image_size=72: PRN needs a multiple of 16"):
        _run(demo_root, tmp_path, "data.image_size=72")


def test_the_detector_traces_for_export(prn_runs):
    # Pure torch on the device, no data-dependent Python: a traced score is the score, also for another batch size.
    detector = methods.load_detector(prn_runs[0]["train_prn"], torch.device("cpu"))
    traced = torch.jit.trace(lambda x: detector.score(x), (torch.rand(2, 3, 64, 64),), check_trace=False)
    images = torch.rand(3, 3, 64, 64)
    (maps, scores), (tmaps, tscores) = detector.score(images), traced(images)
    assert torch.allclose(maps, tmaps, atol=1e-6) and torch.allclose(scores, tscores, atol=1e-6)
