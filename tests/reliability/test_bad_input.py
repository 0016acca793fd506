"""Bad input: one test per case. Each gets one ``realnet: error: ...`` line naming the file, key or
value at fault, exit code 2, and no half-written artifact (no new manifest, no visible key folder).

Every case runs the real CLI in a child process (see ``_child.py``), so exit codes and stderr are
those a user sees.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import pytest
import torch
from reliability._helpers import (
    complete,
    console_script,
    manifests,
    one_line_error,
    run_args,
    sets,
    stage_dir,
    subprocess_env,
)


def _visible_key_dirs(root: Path) -> list[Path]:
    return [p for p in root.glob("*/*/*/*") if p.is_dir() and not p.name.startswith(".")] if root.exists() else []


def _fails_cleanly(child, root: Path, *expected: str, before: list[Path] | None = None) -> str:
    line = one_line_error(child)
    for text in expected:
        assert text in line, f"{text!r} not in {line!r}"
    assert manifests(root) == (before or []), "a failed run must not create an artifact"
    assert len(_visible_key_dirs(root)) == len(before or []), _visible_key_dirs(root)
    return line


def _first_mask(data: Path, category: str = "brick") -> tuple[Path, Path]:
    """(anomalous test image, its mask) of the first defect type."""
    mask = sorted((data / category / "ground_truth").glob("*/*_mask.png"))[0]
    image = data / category / "test" / mask.parent.name / mask.name.replace("_mask", "")
    assert image.is_file()
    return image, mask


# ---------------------------------------------------------------- dataset


def test_missing_dataset_root(realnet, tmp_path):
    missing = tmp_path / "no_such_dataset"
    root = tmp_path / "artifacts"
    child = realnet(["run", "--no-prefect", "--artifacts", str(root), "--data-root", str(missing),
                     "--dataset", "mvtec", "--category", "bottle", *sets()])
    _fails_cleanly(child, root, "dataset root for mvtec not found", str(missing))


@pytest.mark.parametrize("dataset, category, expected", [
    ("demo", "bricks", ["unknown category 'bricks' for dataset 'demo'", "did you mean 'brick'"]),
    ("demoo", "brick", ["unknown dataset 'demoo'", "did you mean 'demo'"]),
])
def test_unknown_category_or_dataset(realnet, demo_data, tmp_path, dataset, category, expected):
    root = tmp_path / "artifacts"
    child = realnet(["run", "--no-prefect", "--artifacts", str(root), "--data-root", str(demo_data),
                     "--dataset", dataset, "--category", category, *sets()])
    _fails_cleanly(child, root, *expected)


def test_empty_train_good(realnet, data_copy, tmp_path):
    train = data_copy / "brick" / "train" / "good"
    for f in train.iterdir():
        f.unlink()
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, data_copy))
    _fails_cleanly(child, root, "train folder for demo/brick has no images", str(train))


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "image file is truncated (PNG IEND chunk missing)"),
    ("garbage", "cannot decode image file"),
])
def test_corrupt_or_truncated_image(realnet, data_copy, tmp_path, damage, expected):
    bad = data_copy / "brick" / "train" / "good" / "003.png"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x00not an image" * 50)
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, data_copy))
    _fails_cleanly(child, root, expected, str(bad))
    assert not complete(root, "train_diffusion")


def test_truncated_test_image_fails_before_any_training(realnet, data_copy, tmp_path):
    # Evaluate is the only stage that reads it; the run must still stop before hours of training.
    image, _ = _first_mask(data_copy)
    image.write_bytes(image.read_bytes()[:200])
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, data_copy))
    _fails_cleanly(child, root, "demo/brick test set", "PNG IEND chunk missing", str(image), "before training")
    assert not complete(root, "train_diffusion")


def _shrink_mask(data: Path) -> tuple[Path, Path]:
    image, mask = _first_mask(data)
    m = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(mask), cv2.resize(m, (m.shape[1] // 2, m.shape[0] // 2), interpolation=cv2.INTER_NEAREST))
    return image, mask


def test_mask_size_differs_from_image_data_check(data_copy):
    image, mask = _shrink_mask(data_copy)
    # The installed console script: `realnet data check` is the command to run before a long job.
    proc = subprocess.run([*console_script(), "data", "check", "--dataset", "demo", "--root", str(data_copy),
                           "--category", "brick"], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("realnet: error: ") and str(mask) in line and str(image) in line
    assert "32x32 (WxH) but its image" in line and "is 64x64" in line


def test_data_check_lists_every_problem_one_per_line(data_copy):
    image, mask = _shrink_mask(data_copy)
    truncated = sorted((data_copy / "grass" / "train" / "good").glob("*.png"))[0]
    truncated.write_bytes(truncated.read_bytes()[:100])
    proc = subprocess.run([*console_script(), "data", "check", "--dataset", "demo", "--root", str(data_copy)],
                          capture_output=True, text=True, env=subprocess_env(), timeout=120)
    assert proc.returncode == 2, proc.stderr
    *problems, last = proc.stderr.strip().splitlines()
    assert last == f"realnet: error: 2 problems in demo under {data_copy}"
    assert len(problems) == 2 and str(mask) in problems[0] and str(truncated) in problems[1], problems


def test_mask_size_differs_from_image_run(realnet, artifacts, data_copy):
    # Upstream artifacts are complete; evaluate reads the masks and must refuse the bad one.
    image, mask = _shrink_mask(data_copy)
    before = manifests(artifacts)
    child = realnet(run_args(artifacts, data_copy))
    line = one_line_error(child)
    assert str(mask) in line and str(image) in line and "(WxH)" in line
    assert manifests(artifacts) == before
    assert len(list(stage_dir(artifacts, "evaluate").iterdir())) == 2  # the old artifact + a scratch folder


def test_anomalous_test_image_without_mask(realnet, data_copy, tmp_path):
    image, mask = _first_mask(data_copy)
    mask.unlink()
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, data_copy))
    _fails_cleanly(child, root, f"anomalous test image {image} has no mask", f"(expected {mask})")


# ---------------------------------------------------------------- config


def test_unknown_config_key(realnet, demo_data, tmp_path):
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, demo_data, "brick", "afs.dimz=[8,8,8,8]"))
    _fails_cleanly(child, root, "afs.dimz: unknown key")


def test_out_of_range_value(realnet, demo_data, tmp_path):
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, demo_data, "brick", "sia.strength=[0.3,0.1]"))
    _fails_cleanly(child, root, "sia.strength", "0.3", "must be [min, max] with 0 <= min <= max")


def test_missing_init_checkpoint_fails_before_any_stage(realnet, demo_data, tmp_path):
    root, missing = tmp_path / "artifacts", tmp_path / "weights" / "256x256_diffusion_uncond.pt"
    child = realnet(run_args(root, demo_data, "brick", f"diffusion.init_checkpoint={missing}"))
    _fails_cleanly(child, root, "diffusion.init_checkpoint: no such file or directory", str(missing))


def test_missing_backbone_weights_fail_before_diffusion_training(realnet, demo_data, tmp_path):
    # The backbone is first built by select_features, after hours of diffusion training and SIA at paper
    # size: the run must stop at once instead.
    root, missing = tmp_path / "artifacts", tmp_path / "wide_resnet50_2-95faca4d.pth"
    child = realnet(run_args(root, demo_data, "brick", "backbone.name=wide_resnet50_2",
                             f"backbone.weights={missing}"))
    _fails_cleanly(child, root, "backbone.weights: no such file or directory", str(missing))
    assert not complete(root, "train_diffusion")


# ---------------------------------------------------------------- storage


def test_artifact_root_not_writable(realnet, demo_data, tmp_path):
    # Tests run as root, which ignores permissions: a path under a regular file is never writable.
    (tmp_path / "file.txt").write_text("not a folder")
    root = tmp_path / "file.txt" / "artifacts"
    child = realnet(run_args(root, demo_data))
    _fails_cleanly(child, tmp_path, "is not writable", str(root))


@pytest.fixture
def test_image(demo_data: Path) -> Path:
    return demo_data / "brick" / "test" / "good" / "000.png"


def test_checkpoint_from_another_module(realnet, tmp_path, test_image):
    ckpt = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), ckpt)
    out = tmp_path / "pred"
    child = realnet(["predict", "--model", str(ckpt), "--out", str(out), str(test_image)])
    line = one_line_error(child)
    assert str(ckpt) in line and "not a RealNet checkpoint" in line
    assert not out.exists() or not list(out.iterdir())


def test_checkpoint_from_another_architecture(realnet, baseline, tmp_path, test_image):
    (key,) = complete(baseline, "train_realnet")
    good = torch.load(stage_dir(baseline, "train_realnet") / key / "realnet.pt", weights_only=True)
    state = dict(good["state_dict"])
    name = next(k for k, v in state.items() if v.ndim == 4)  # a conv weight: give it other channels
    state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
    state["extra.weight"] = torch.zeros(1)
    ckpt = tmp_path / "realnet.pt"
    torch.save({**good, "state_dict": state}, ckpt)
    out = tmp_path / "pred"
    child = realnet(["predict", "--model", str(ckpt), "--out", str(out), str(test_image)])
    line = one_line_error(child)
    assert f"checkpoint {ckpt} does not fit RealNet" in line
    assert "unexpected: extra.weight" in line and f"shape mismatch: {name}" in line
    assert not out.exists() or not list(out.iterdir())


def test_overwritten_zarr_shard_in_the_store(realnet, artifacts, demo_data):
    """Same size, so only the decoder can tell: the stage reading it names the array."""
    (sia,) = complete(artifacts, "generate_sia")
    shard = stage_dir(artifacts, "generate_sia") / sia / "sia.zarr" / "images" / "c" / "1" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10:60] = bytes(50)
    shard.write_bytes(bytes(data))
    before = manifests(artifacts)
    # A new select_features key (afs.batches changed) reads the SIA images again.
    child = realnet(run_args(artifacts, demo_data, "brick", "afs.batches=3"))
    line = one_line_error(child)
    assert f"SIA images {shard.parents[5]}/images are corrupt or truncated" in line, line
    assert "--rerun generate_sia" in line, line
    assert manifests(artifacts) == before
    assert len(complete(artifacts, "select_features")) == 1


@pytest.mark.parametrize("damage", ["truncated shard", "missing zarr.json"])
def test_damaged_upstream_artifact_is_rebuilt_not_read(realnet, artifacts, demo_data, damage):
    """A file of an upstream artifact that is gone or resized: the run names it and rebuilds that
    artifact (same key) before anything reads it."""
    import json

    (sia,) = complete(artifacts, "generate_sia")
    zarr = stage_dir(artifacts, "generate_sia") / sia / "sia.zarr" / "images"
    if damage == "truncated shard":
        bad = zarr / "c" / "1" / "0" / "0" / "0"
        size = bad.stat().st_size
        bad.write_bytes(bad.read_bytes()[: size // 2])
        named = f"{bad} has {size // 2} bytes, its manifest says {size} bytes; rebuilding it"
    else:
        bad = zarr / "zarr.json"
        bad.unlink()
        named = f"{bad} is missing"
    child = realnet([*run_args(artifacts, demo_data, "brick", "afs.batches=3"), "--json"])
    assert child.rc == 0, child.stderr
    assert f"realnet: warning: artifact {zarr.parents[1]} is damaged: {named}" in child.stderr
    ran = {r["stage"]: r["status"] for r in json.loads(child.stdout)["stages"]}
    assert ran["generate_sia"] == "ran" and ran["train_diffusion"] == "reused"
    assert complete(artifacts, "generate_sia") == [sia] and bad.exists()


def test_damaged_artifacts_are_named_by_status_tables_and_predict_and_rebuilt_by_run(
        realnet, artifacts, demo_data, test_image, tmp_path):
    """A deleted weights file and a manifest cut in half: nothing treats either artifact as whole."""
    import json

    (model,) = complete(artifacts, "train_realnet")
    weights = stage_dir(artifacts, "train_realnet") / model / "realnet.pt"
    weights.unlink()
    (evaluation,) = complete(artifacts, "evaluate")
    cut = stage_dir(artifacts, "evaluate") / evaluation / "manifest.json"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    selection = ["--artifacts", str(artifacts), "--data-root", str(demo_data), "--dataset", "demo",
                 "--category", "brick", *sets()]

    status = realnet(["status", *selection])
    assert status.rc == 0, status.stderr
    assert f"damaged: artifact {weights.parent} is damaged: {weights} is missing" in status.stdout
    assert f"damaged: artifact {cut.parent} is damaged: its manifest {cut} does not parse" in status.stdout
    rows = json.loads(realnet(["status", "--json", *selection]).stdout)
    assert {r["stage"]: r["state"] for r in rows} == {
        "train_diffusion": "current", "generate_sia": "current", "select_features": "current",
        "train_realnet": "damaged", "calibrate": "current", "evaluate": "damaged"}

    tables = realnet(["tables", "metrics", "--artifacts", str(artifacts)])
    assert tables.rc == 0 and "no metrics rows" in tables.stdout, tables.stdout
    assert f"realnet: warning: skipped artifact {cut.parent} is damaged" in tables.stderr

    out = tmp_path / "pred"
    predict = realnet(["predict", "--model", str(weights.parent), "--out", str(out), str(test_image)])
    assert f"{weights} is missing" in one_line_error(predict)
    assert not out.exists()

    run = realnet([*run_args(artifacts, demo_data), "--json"])
    assert run.rc == 0, run.stderr
    ran = {r["stage"]: r["status"] for r in json.loads(run.stdout)["stages"]}
    assert ran == {"train_diffusion": "reused", "generate_sia": "reused", "select_features": "reused",
                   "train_realnet": "ran", "calibrate": "reused", "evaluate": "ran"}
    assert f"realnet: warning: artifact {weights.parent} is damaged" in run.stderr
    assert weights.is_file() and json.loads(cut.read_text())["key"] == evaluation  # same keys, rebuilt whole
    rows = json.loads(realnet(["status", "--json", *selection]).stdout)
    assert {r["state"] for r in rows} == {"current"}


# ---------------------------------------------------------------- found before the first stage


def _empty_every_mask(data: Path, category: str = "brick") -> list[Path]:
    masks = sorted((data / category / "ground_truth").glob("*/*_mask.png"))
    for mask in masks:
        m = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(mask), m * 0)
    return masks


def _data_check(data: Path, *extra: str) -> subprocess.CompletedProcess:
    import sys

    return subprocess.run([sys.executable, "-m", "flows.cli", "data", "check", "--dataset", "demo", "--root",
                           str(data), *extra], capture_output=True, text=True, env=subprocess_env(), timeout=120)


def test_a_test_set_whose_masks_are_all_empty_is_found_by_data_check_and_before_the_first_stage(
        realnet, data_copy, tmp_path):
    # Before, data check passed it and evaluate failed with a bare ValueError after all the training.
    masks = _empty_every_mask(data_copy)
    proc = _data_check(data_copy, "--category", "brick")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert f"all {len(masks)} masks are empty" in line and str(masks[0]) in line, line
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, data_copy, "brick", "synthesis.source=cutpaste"))  # first stage: select_features
    _fails_cleanly(child, root, "demo/brick test set", f"all {len(masks)} masks are empty", str(masks[0]))


def test_more_afs_channels_than_the_backbone_has_fail_before_the_first_stage(realnet, demo_data, tmp_path):
    # Before, validation accepted it and select_features (stage 3) failed after diffusion training and SIA.
    root = tmp_path / "artifacts"
    child = realnet(run_args(root, demo_data, "brick", "afs.dims=[8,8,8,4096]"))
    _fails_cleanly(child, root, "afs.dims=[8, 8, 8, 4096]: more channels than efficientnet_lite0 has",
                   "layer4 has 320")
