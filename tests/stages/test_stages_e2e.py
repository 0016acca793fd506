"""The six stages as plain functions: each writes a complete artifact with the files users look for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from stages import dag
from stages.common import execute, stage_key, stage_ref
from storage.arrays import open_image_array, verify_image_array


def _dir(results, stage) -> Path:
    return Path(results[stage].ref.path)


def test_every_stage_runs_and_leaves_a_manifest(pipeline_run, tiny_cfg):
    store, results = pipeline_run
    assert list(results) == dag.active(tiny_cfg) == [
        "train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate", "evaluate"]
    for stage, res in results.items():
        assert res.status == "ran", stage
        assert store.exists(res.ref), stage
        assert (_dir(results, stage) / "manifest.json").is_file()


def test_train_diffusion_writes_ema_weights_loss_log_and_sample_grid(pipeline_run, tiny_cfg):
    _, results = pipeline_run
    d = _dir(results, "train_diffusion")
    log = pd.read_parquet(d / "loss_log.parquet")
    assert list(log.step) == list(range(1, tiny_cfg.diffusion.steps + 1))
    assert np.isfinite(log.loss).all()
    ckpt = torch.load(d / "ema.pt", weights_only=True)
    assert {"flags", "ema", "center", "categories"} <= set(ckpt)
    assert (d / "samples.png").stat().st_size > 0
    assert not (d / "train_state.pt").exists(), "the resume state is scratch, not part of the artifact"


def test_generate_sia_writes_exactly_n_images_with_their_strengths(pipeline_run, tiny_cfg):
    _, results = pipeline_run
    z = _dir(results, "generate_sia") / "sia.zarr"
    n = tiny_cfg.sia.num_images
    verify_image_array(z, n)
    images = open_image_array(z)
    assert images.shape == (n, tiny_cfg.diffusion.image_size, tiny_cfg.diffusion.image_size, 3)
    assert images.dtype == np.uint8
    strength = np.asarray(open_image_array(z, name="strength")[:])
    lo, hi = tiny_cfg.sia.strength
    assert strength.shape == (n,) and ((strength >= lo) & (strength <= hi)).all()
    # s is drawn once per batch of sia.batch_size images.
    assert len(np.unique(strength[: tiny_cfg.sia.batch_size])) == 1


def test_generate_sia_stores_a_tone_curve_that_training_reads_apply(pipeline_run, tiny_cfg, stage_data):
    from realnet_core.synthesis.tones import apply_tone_curve
    from stages.inputs import category_split, train_images
    from stages.training_data import StoredSIASource
    from storage.arrays import read_attrs

    assert tiny_cfg.sia.match_tones  # on in the demo profile
    z = _dir(pipeline_run[1], "generate_sia") / "sia.zarr"
    curve = np.asarray(read_attrs(z)["tone_curve"])
    assert curve.shape == (3, 256) and (np.diff(curve, axis=1) >= 0).all()
    source = StoredSIASource(str(z))
    raw = np.asarray(open_image_array(z)[:])
    read = (source.sample(64, torch.Generator().manual_seed(0)) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    assert set(np.unique(read[..., 0])) <= set(curve[0][np.unique(raw[..., 0])].tolist())
    # The mapped SIA's mean level per channel is the training images' at the SIA size (up to clipping).
    train = train_images(category_split(tiny_cfg, "demo", "brick"), tiny_cfg.diffusion.image_size)
    mapped = apply_tone_curve(raw, curve.astype(np.uint8))
    for c in range(3):
        assert abs(mapped[..., c].mean() - train[..., c].mean()) <= 3


def test_select_features_table_marks_the_configured_number_of_channels(pipeline_run, tiny_cfg):
    _, results = pipeline_run
    afs = pd.read_parquet(_dir(results, "select_features") / "afs.parquet")
    assert {"dataset", "category", "layer", "channel", "loss", "rank", "selected"} <= set(afs.columns)
    per_layer = afs.groupby("layer").selected.sum().sort_index()
    assert per_layer.tolist() == tiny_cfg.afs.dims
    for _, layer in afs.groupby("layer"):
        kept, dropped = layer[layer.selected], layer[~layer.selected]
        assert kept.loss.max() <= dropped.loss.min()


def test_evaluate_writes_metrics_scores_maps_and_overlays(pipeline_run, stage_data):
    _, results = pipeline_run
    d = _dir(results, "evaluate")
    metrics = pd.read_parquet(d / "metrics.parquet")
    assert len(metrics) == 1
    for col in ("image_auroc", "pixel_auroc", "pro"):
        assert 0.0 <= metrics[col].iloc[0] <= 1.0
    assert metrics.model_key.iloc[0] == results["train_realnet"].ref.key
    scores = pd.read_parquet(d / "scores.parquet")
    n_test = len(list((Path(stage_data) / "brick" / "test").rglob("*.png")))
    assert len(scores) == n_test and scores.label.isin([0, 1]).all()
    overlays = sorted(p.name for p in (d / "overlays").glob("*.png"))
    assert len(overlays) == 4
    # named after the test image, so that the source is easy to find: <defect>_<stem>_score<score>.png
    sources = {f"{p.parent.name}_{p.stem}" for p in (Path(stage_data) / "brick" / "test").rglob("*.png")}
    assert all(name.split("_score")[0] in sources for name in overlays), overlays


def test_second_execution_reuses_the_artifact(pipeline_run, tiny_cfg):
    store, results = pipeline_run
    again = execute(dag.MODULES["evaluate"], tiny_cfg, store, "demo", "brick",
                    {"train_realnet": results["train_realnet"].ref, "calibrate": results["calibrate"].ref})
    assert again.status == "reused" and again.ref == results["evaluate"].ref


def test_keys_follow_only_the_config_sections_a_stage_reads(tiny_cfg, pipeline_run):
    _, results = pipeline_run
    ups = {"train_realnet": results["train_realnet"].ref, "calibrate": results["calibrate"].ref}
    base = stage_key(dag.MODULES["evaluate"], tiny_cfg, "demo", "brick", ups)
    changed_afs = tiny_cfg.model_copy(update={"afs": tiny_cfg.afs.model_copy(update={"dims": [8, 8, 8, 8]})})
    assert stage_key(dag.MODULES["evaluate"], changed_afs, "demo", "brick", ups) == base
    changed_eval = tiny_cfg.model_copy(update={"evaluate": tiny_cfg.evaluate.model_copy(update={"pool_size": 4})})
    assert stage_key(dag.MODULES["evaluate"], changed_eval, "demo", "brick", ups) != base


def test_predict_scores_new_images_and_writes_heat_maps(pipeline_run, stage_data, tmp_path, capsys):
    from flows.cli import main

    _, results = pipeline_run
    images = sorted((Path(stage_data) / "brick" / "test").rglob("*.png"))[:2]
    code = main(["predict", "--model", str(_dir(results, "train_realnet")), *map(str, images),
                 "--out", str(tmp_path)])
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    threshold = json.loads((_dir(results, "calibrate") / "thresholds.json").read_text())["image"]
    for line in lines:
        path, score, thr, decision, heat = line.split("\t")
        assert 0.0 <= float(score) <= 1.0 and float(thr) == pytest.approx(threshold, abs=1e-6)
        assert decision == ("defect" if float(score) > threshold else "ok")
        assert Path(heat).is_file() and Path(heat.replace("_heatmap.png", "_defect.png")).is_file()


def test_predict_takes_folders_and_names_repeated_stems_by_their_folder(pipeline_run, stage_data, tmp_path, capsys):
    from flows.cli import main

    _, results = pipeline_run
    test = Path(stage_data) / "brick" / "test"
    images = sorted(test.rglob("*.png"))
    assert len({p.stem for p in images}) < len(images), "the demo repeats 000.png in every defect folder"
    assert main(["predict", "--model", str(_dir(results, "train_realnet")), str(test), "--out", str(tmp_path)]) == 0
    heats = [Path(line.split("\t")[4]) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(heats) == len(images) == len(set(heats)) == len(list(tmp_path.glob("*_heatmap.png")))
    first_good = sorted((test / "good").glob("*.png"))[0]
    assert tmp_path / f"good_{first_good.stem}_heatmap.png" in heats


def test_predict_gives_the_score_evaluate_gave_at_the_same_pool_size(pipeline_run, tiny_cfg, stage_data, tmp_path,
                                                                      capsys):
    from flows.cli import main
    from stages.methods.realnet.detector import default_pool

    _, results = pipeline_run
    test = Path(stage_data) / "brick" / "test"
    pool = str(tiny_cfg.evaluate.pool_size)
    assert main(["predict", "--model", str(_dir(results, "train_realnet")), str(test), "--pool", pool,
                 "--out", str(tmp_path)]) == 0
    predicted = {Path(line.split("\t")[0]).resolve(): float(line.split("\t")[1])
                 for line in capsys.readouterr().out.strip().splitlines()}
    scores = pd.read_parquet(_dir(results, "evaluate") / "scores.parquet")
    evaluated = {Path(p).resolve(): s for p, s in zip(scores.path, scores.score, strict=True)}
    assert predicted.keys() == evaluated.keys()
    for path, score in predicted.items():
        assert abs(score - evaluated[path]) < 1e-5, (path, score, evaluated[path])
    assert (default_pool(256), default_pool(128)) == (16, 8)  # the paper's and the demo's evaluate.pool_size


def test_predict_reports_every_bad_input_before_scoring_any(pipeline_run, stage_data, tmp_path, capsys):
    from flows.cli import main

    _, results = pipeline_run
    good = sorted((Path(stage_data) / "brick" / "test" / "good").glob("*.png"))[0]
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "garbage.png").write_bytes(b"\x00not an image" * 50)
    bad = [tmp_path / "notes.txt", tmp_path / "garbage.png", tmp_path / "absent.png"]
    out = tmp_path / "heatmaps"
    code = main(["predict", "--model", str(_dir(results, "train_realnet")), str(good), *map(str, bad),
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "nothing scored: 3 problems" in err, err
    assert all(str(p) in err for p in bad), err
    assert not out.exists(), "nothing may be written when an input is bad"


def test_a_failed_forced_rerun_keeps_the_previous_artifact(pipeline_run, tiny_cfg, monkeypatch):
    import pytest

    store, results = pipeline_run
    evaluate = dag.MODULES["evaluate"]

    def broken(ctx):
        raise RuntimeError("simulated failure halfway through a forced rebuild")

    monkeypatch.setattr(evaluate, "run", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        execute(evaluate, tiny_cfg, store, "demo", "brick", {"train_realnet": results["train_realnet"].ref,
                                                             "calibrate": results["calibrate"].ref}, force=True)
    assert store.exists(results["evaluate"].ref)
    assert (_dir(results, "evaluate") / "metrics.parquet").is_file()


def test_a_failed_shard_write_stops_generate_sia_and_a_rerun_finishes_it(pipeline_run, tiny_cfg, tmp_path,
                                                                          monkeypatch):
    # Shards are written on a background thread: its error must stop the stage, the shards written
    # before it must stay done, and the shard that failed must not be marked done.
    import shutil

    import pytest

    from stages import generate_sia
    from storage.arrays import ShardProgress
    from storage.store import Store

    store, results = pipeline_run
    shutil.copytree(store.root, tmp_path / "artifacts")
    copy = Store(str(tmp_path / "artifacts"))
    cfg = tiny_cfg.model_copy(update={"sia": tiny_cfg.sia.model_copy(update={"seed": tiny_cfg.sia.seed + 1})})
    ups = {"train_diffusion": results["train_diffusion"].ref}
    real_write, written, failing = generate_sia.write_shard, [], {1}

    def disk_full_at_shard_1(array, shard, values):
        if shard in failing:
            raise OSError(f"simulated: no space left writing shard {shard}")
        real_write(array, shard, values)
        written.append(shard)

    monkeypatch.setattr(generate_sia, "write_shard", disk_full_at_shard_1)
    with pytest.raises(OSError, match="shard 1"):
        execute(generate_sia, cfg, copy, "demo", "brick", ups)
    ref = stage_ref(generate_sia, cfg, copy, "demo", "brick", ups)
    assert not copy.exists(ref) and written == [0]
    progress = ShardProgress(copy.scratch(ref) / "sia.zarr", cfg.sia.num_images, cfg.sia.shard_images)
    assert progress.done == {0}

    failing.clear()
    again = execute(generate_sia, cfg, copy, "demo", "brick", ups)
    assert again.status == "ran"
    assert written == [0, 1, 2]  # the rerun kept shard 0 and wrote only the others
    verify_image_array(Path(again.ref.path) / "sia.zarr", cfg.sia.num_images)  # raises if a shard is missing


def test_loaded_models_are_in_eval_mode_and_ask_for_no_gradients(pipeline_run):
    # Under autocast, a weight that requires grad gets a bf16 copy kept for the whole call (1 GB at paper size).
    from stages.diffusion_model import load_ema
    from stages.methods.realnet.detector import load_bundle

    _, results = pipeline_run
    backbone, net, _ = load_bundle(_dir(results, "train_realnet"), torch.device("cpu"))
    unet, _, _ = load_ema(str(_dir(results, "train_diffusion") / "ema.pt"), torch.device("cpu"))
    for module in (backbone, net, unet):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
