"""SimpleNet through the pipeline on the demo data at a tiny size: its own stage and the shared evaluate, no
diffusion, SIA or AFS stage; seeded runs repeat; predict scores as evaluate did; the tables and the paper
comparison keep the methods apart."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from realnet_core.config import load_config
from stages import dag
from stages.common import execute
from stages.methods.simplenet import train_simplenet
from storage.store import Store

SMALL = ["method=simplenet", "simplenet.pretrain_embed_dimension=32", "simplenet.target_embed_dimension=32",
         "simplenet.dsc_hidden=16", "simplenet.epochs=3", "simplenet.batch_size=4", "simplenet.checkpoint_every=1",
         "runtime.threads=1"]


@pytest.fixture(scope="module")
def cfg(tiny_overrides):
    return load_config("demo", [*tiny_overrides, *SMALL])


@pytest.fixture(scope="module")
def run(cfg, tmp_path_factory):
    """``realnet run --set method=simplenet`` for demo/brick, in this process."""
    from flows.runner import run_direct

    root = tmp_path_factory.mktemp("artifacts")
    result = run_direct(cfg, ["brick"], artifacts=str(root))
    return root, {row["stage"]: Path(row["path"]) for row in result["stages"]}


def test_simplenet_runs_its_own_stage_and_evaluate_only(cfg, run):
    _, paths = run
    assert dag.active(cfg) == list(paths) == ["train_simplenet", "calibrate", "evaluate"]
    metrics = pd.read_parquet(paths["evaluate"] / "metrics.parquet")
    assert metrics.method.tolist() == ["simplenet"]
    assert metrics[["image_auroc", "pixel_auroc", "pro"]].apply(lambda c: c.between(0, 1)).all(axis=None)
    log = pd.read_parquet(paths["train_simplenet"] / "simplenet_train_log.parquet")
    assert log.epoch.tolist() == [1, 2, 3] and log.loss.notna().all()
    assert not (paths["train_simplenet"] / "train_state.pt").exists(), "the resume state is scratch"


def test_a_seeded_training_run_repeats(cfg, run, tmp_path):
    _, paths = run
    again = execute(train_simplenet, cfg, Store(str(tmp_path)), "demo", "brick")
    first = torch.load(paths["train_simplenet"] / "simplenet.pt", weights_only=True)["state_dict"]
    second = torch.load(Path(again.ref.path) / "simplenet.pt", weights_only=True)["state_dict"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_resumed_run_is_the_same_run(cfg, run, tmp_path, monkeypatch):
    _, paths = run
    store = Store(str(tmp_path))
    calls = {"n": 0}
    step = train_simplenet.train_step

    def dies_in_epoch_three(*args):
        calls["n"] += 1
        if calls["n"] == 2 * 2 + 1:  # the first step of epoch 3 (8 images, batch 4), after epoch 2's state
            raise RuntimeError("killed")
        return step(*args)

    monkeypatch.setattr(train_simplenet, "train_step", dies_in_epoch_three)
    with pytest.raises(RuntimeError, match="killed"):
        execute(train_simplenet, cfg, store, "demo", "brick")
    monkeypatch.setattr(train_simplenet, "train_step", step)
    resumed = execute(train_simplenet, cfg, store, "demo", "brick")
    assert store.manifest(resumed.ref)["meta"]["resumed_from_epoch"] == 2
    first = torch.load(paths["train_simplenet"] / "simplenet.pt", weights_only=True)["state_dict"]
    second = torch.load(Path(resumed.ref.path) / "simplenet.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_predict_gives_the_score_evaluate_gave(run, demo_root, tmp_path, capsys):
    from flows.cli import main

    _, paths = run
    assert main(["predict", "--model", str(paths["train_simplenet"]), str(demo_root / "brick" / "test"),
                 "--out", str(tmp_path)]) == 0
    predicted = {Path(line.split("\t")[0]).resolve(): float(line.split("\t")[1])
                 for line in capsys.readouterr().out.strip().splitlines()}
    scores = pd.read_parquet(paths["evaluate"] / "scores.parquet")
    evaluated = {Path(p).resolve(): s for p, s in zip(scores.path, scores.score, strict=True)}
    assert predicted.keys() == evaluated.keys()
    for path, score in predicted.items():
        assert score == pytest.approx(evaluated[path], abs=1e-5), path


def test_predict_refuses_a_pool_size_for_simplenet(run, demo_root, tmp_path, capsys):
    from flows.cli import main

    _, paths = run
    image = sorted((demo_root / "brick" / "test" / "good").glob("*.png"))[0]
    assert main(["predict", "--model", str(paths["train_simplenet"]), str(image), "--pool", "4",
                 "--out", str(tmp_path)]) != 0
    assert "does not pool its map" in capsys.readouterr().err


def test_a_discriminator_that_separates_nothing_is_reported(cfg, tmp_path, capsys):
    # 3 epochs of the code's noise (0.015) on Lite0's features (per-dimension std about 3): the scores of
    # normal and noisy features stay alike.
    result = execute(train_simplenet, cfg, Store(str(tmp_path)), "demo", "brick")
    meta = Store(str(tmp_path)).manifest(result.ref)["meta"]
    assert meta["final_loss"] > 0.9 and meta["feature_std"] > 1
    err = capsys.readouterr().err
    assert "the discriminator did not separate the noisy features" in err and "raise simplenet.noise_std" in err
