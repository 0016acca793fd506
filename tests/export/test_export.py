"""`realnet export` and the exported engines, per registered method, on the demo's real brick photographs.

Each method's model is trained tiny here (cut-paste anomalies, a few steps), exported once per format and
compared with its PyTorch detector: float32 engines match within 1e-3 with identical decisions and score
order; a float16 export stays within the bound below.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli import main
from realnet_core.config import load_config
from realnet_core.data.images import read_rgb
from stages import calibrate, dag, methods
from stages.common import execute
from stages.export.engines import load_engine
from stages.export.write import METADATA, artifact_info, export_detector, export_model
from stages.inputs import to_tensor
from storage.store import Store

pytestmark = pytest.mark.slow

# Small enough to train in seconds; each method's own settings beside the shared ones.
SHARED = ["synthesis.source=cutpaste", "data.image_size=64", "runtime.progress=false", "runtime.threads=1"]
TINY = {"realnet": ["afs.dims=[16,24,48,96]", "afs.batches=2", "afs.batch_size=4", "train.epochs=1",
                    "train.steps_per_epoch=2", "train.batch_size=4", "train.recon_res_blocks=1"]}
MAP_TOLERANCE = 1e-3  # float32 engines: the same arithmetic in another order
# float16 keeps 11 significant bits (a relative step of 2^-11, about 5e-4) in every weight and activation; over
# the ~250 convolutions and products from the image to the map these roundings add up. Measured on the demo
# model on these images: largest difference 5.3e-2 at one pixel, mean 4e-3 (blocking softmax, top-k and the
# norms from float16 changed neither much). The bounds are twice to thrice that, and still fail a broken
# float16 graph (a wrong cast or an overflow moves whole maps by far more). Close scores may swap order.
HALF_MAP_TOLERANCE = 1e-1
HALF_MEAN_TOLERANCE = 1e-2


@pytest.fixture(scope="module", params=sorted(methods.METHODS))
def trained(request, demo_root, tmp_path_factory) -> Path:
    """The model artifact folder of a tiny model of one registered method, trained on demo/brick."""
    name = request.param
    cfg = load_config("demo", [f"method={name}", *SHARED, *TINY.get(name, []), f"data.roots.demo={demo_root}"])
    store = Store(str(tmp_path_factory.mktemp(f"artifacts_{name}")))
    results = {}
    for stage in dag.active(cfg):
        if stage == "evaluate":
            continue
        ups = {u: results[u].ref for u in dag.upstream(stage, cfg)}
        results[stage] = execute(dag.MODULES[stage], cfg, store, "demo", "brick", ups)
    return store.local_copy(results[methods.get(name).model_stage].ref)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> dict[str, Path]:
    """The tiny model exported to ONNX and OpenVINO in float32, and to ONNX in float16. The trace is most of an
    export's time: the last two convert the first one's graph, as ``export_model`` would its own trace."""
    root = tmp_path_factory.mktemp("exports")
    out = {name: root / name for name in ("onnx_float32", "openvino_float32", "onnx_float16")}
    export_model(trained, "onnx", out["onnx_float32"])
    detector = reference(trained)
    info = {**artifact_info(trained), "thresholds": calibrate.thresholds_for(trained), "model": str(trained)}
    traced = out["onnx_float32"] / "model.onnx"
    export_detector(detector, "openvino", out["openvino_float32"], "float32", info, traced=traced)
    export_detector(detector, "onnx", out["onnx_float16"], "float16", info, traced=traced)
    return out


def reference(trained: Path) -> object:
    """The PyTorch detector scoring as its export does: with the pooling its calibrated thresholds were set on."""
    model, thresholds = calibrate.model_and_thresholds(trained)
    return calibrate.score_as_calibrated(methods.load_detector(model, torch.device("cpu")), thresholds)


def brick_images(demo_root: Path) -> tuple[list[Path], torch.Tensor]:
    files = sorted((demo_root / "brick" / "test").rglob("*.png"))
    return files, to_tensor(np.stack([read_rgb(f) for f in files]))


def train_images(demo_root: Path) -> torch.Tensor:
    return to_tensor(np.stack([read_rgb(f) for f in sorted((demo_root / "brick" / "train").rglob("*.png"))]))


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
def test_float32_engines_give_pytorchs_maps_decisions_and_score_order(trained, exported, demo_root, engine):
    detector = reference(trained)
    runner = load_engine(engine, exported[f"{engine}_float32"], torch.device("cpu"))
    _, images = brick_images(demo_root)
    with torch.no_grad():
        maps, scores = detector.score(images)
    got_maps, got_scores = runner.score(images)
    assert got_maps.shape == maps.shape and got_scores.shape == scores.shape
    assert float((got_maps - maps).abs().max()) < MAP_TOLERANCE
    # A decision threshold from the training images (never the test set): the mean of their scores.
    with torch.no_grad():
        threshold = float(detector.score(train_images(demo_root))[1].mean())
    assert torch.equal(got_scores >= threshold, scores >= threshold)
    assert torch.equal(torch.argsort(got_scores, stable=True), torch.argsort(scores, stable=True))


def test_float16_export_stays_within_its_bound_and_records_it(trained, exported, demo_root):
    detector = methods.load_detector(trained, torch.device("cpu"))
    runner = load_engine("onnx", exported["onnx_float16"], torch.device("cpu"))
    _, images = brick_images(demo_root)
    with torch.no_grad():
        maps, _ = detector.score(images)
    got_maps, _ = runner.score(images)
    difference = (got_maps - maps).abs()
    assert 0 < float(difference.max()) < HALF_MAP_TOLERANCE  # float16 really rounds, and stays close
    assert float(difference.mean()) < HALF_MEAN_TOLERANCE
    measured = runner.metadata["parity"]["max_map_difference"]
    assert 0 < measured < HALF_MAP_TOLERANCE and runner.metadata["precision"] == "float16"


def test_the_graph_has_dynamic_batch_and_size_and_its_metadata(trained, exported):
    import onnx

    folder = exported["onnx_float32"]
    meta = json.loads((folder / METADATA).read_text())
    manifest = json.loads((trained / "manifest.json").read_text())
    assert meta["artifact_key"] == manifest["key"] and meta["method"] == manifest_method(trained)
    assert meta["image_size"] == 64 and meta["format"] == "onnx"
    assert meta["thresholds"] == calibrate.thresholds_for(trained) and meta["thresholds"]["image"] is not None
    assert meta["parity"]["max_map_difference"] < MAP_TOLERANCE
    props = {p.key: json.loads(p.value) for p in onnx.load(str(folder / "model.onnx")).metadata_props}
    assert props["artifact_key"] == manifest["key"] and props["image_size"] == 64
    assert sorted(p.name for p in folder.iterdir()) == ["export.json", "model.onnx"]
    runner = load_engine("onnx", folder, torch.device("cpu"))
    for shape in ((1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 80, 96)):  # another size is resized in the graph
        maps, scores = runner.score(torch.rand(shape))
        assert maps.shape == (shape[0], *shape[2:]) and scores.shape == (shape[0],)
    assert sorted(p.suffix for p in exported["openvino_float32"].iterdir()) == [".bin", ".json", ".xml"]


def manifest_method(model: Path) -> str:
    return next(m.name for m in methods.METHODS.values() if (model / m.model_file).is_file())


def test_predict_prints_the_same_lines_and_heat_maps_with_every_engine(trained, exported, demo_root, tmp_path,
                                                                       capsys):
    files, _ = brick_images(demo_root)
    images = [str(f) for f in files[:3]]
    lines = {}
    for engine, model in (("torch", trained), ("onnx", exported["onnx_float32"]),
                          ("openvino", exported["openvino_float32"])):
        assert main(["predict", "--engine", engine, "--model", str(model), "--out", str(tmp_path / engine),
                     "--device", "cpu", *images]) == 0
        lines[engine] = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    for engine in ("onnx", "openvino"):
        assert len(lines[engine]) == len(images)
        for (path, score, threshold, decision, heat), (path_t, score_t, threshold_t, decision_t, heat_t) in zip(
                lines[engine], lines["torch"], strict=True):
            assert path == path_t and Path(heat).name == Path(heat_t).name
            assert threshold == threshold_t != "-" and decision == decision_t in ("ok", "defect")
            # Printed to 6 decimals; float32 arithmetic in another order moves a score by a few 1e-6 (SimpleNet's
            # raw discriminator outputs, PRN's top-k means).
            assert abs(float(score) - float(score_t)) <= 1e-5
            a, b = read_rgb(Path(heat)).astype(int), read_rgb(Path(heat_t)).astype(int)
            # A map value on the edge between two of the colour map's 256 levels may land on the other one: a
            # colour step of up to 4, halved by the 50% blend, plus rounding; anything more is a real difference.
            assert np.abs(a - b).max() <= 3 and (a != b).any(axis=2).mean() < 0.01
            stem = Path(heat).name.removesuffix("_heatmap.png")
            full, full_t = (np.load(Path(h).parent / f"{stem}_map.npy").astype(np.float32) for h in (heat, heat_t))
            assert np.abs(full - full_t).max() < MAP_TOLERANCE


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_export_refuses_a_bad_format_a_used_folder_and_a_damaged_or_missing_model(trained, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--model", str(trained), "--format", "tflite", "--out", str(out)]) == 2
    assert "--format 'tflite': unknown format; formats: onnx, openvino" in one_error(capsys)
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.txt").write_text("x")
    assert main(["export", "--model", str(trained), "--format", "onnx", "--out", str(used)]) == 2
    assert f"--out {used}: exists and is not an empty folder" in one_error(capsys)
    assert main(["export", "--model", str(tmp_path / "nosuch"), "--format", "onnx", "--out", str(out)]) == 2
    assert "nosuch" in one_error(capsys)
    damaged = Path(shutil.copytree(trained, tmp_path / "damaged"))
    model_file = next(p for p in damaged.iterdir() if p.suffix in (".pt", ".pth"))
    model_file.write_bytes(model_file.read_bytes()[:100])  # cut short, as by a full disk
    assert main(["export", "--model", str(damaged), "--format", "onnx", "--out", str(out)]) == 2
    assert f"artifact {damaged} is damaged" in one_error(capsys)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))  # nothing that looks complete


def test_predict_refuses_a_folder_that_is_no_export_or_of_another_engine(exported, demo_root, tmp_path, capsys):
    image = str(brick_images(demo_root)[0][0])
    assert main(["predict", "--engine", "onnx", "--model", str(tmp_path), image, "--out", str(tmp_path / "p")]) == 2
    assert f"no exported model at {tmp_path}" in one_error(capsys)
    assert main(["predict", "--engine", "openvino", "--model", str(exported["onnx_float32"]), image,
                 "--out", str(tmp_path / "p")]) == 2
    assert "exported for onnx, not openvino; give --engine onnx" in one_error(capsys)
    assert main(["predict", "--engine", "tensorrt", "--model", str(exported["onnx_float32"]), image]) == 2
    assert "--engine 'tensorrt': unknown engine" in one_error(capsys)


def test_a_model_without_a_calibrate_artifact_exports_without_thresholds(trained, tmp_path):
    copy = Path(shutil.copytree(trained, tmp_path / "model"))  # outside its store: no calibrate artifact beside it
    meta = export_model(copy, "onnx", tmp_path / "out")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert meta["thresholds"] is None and meta["artifact_key"] == manifest["key"]
    assert artifact_info(copy / manifest["files"][0]["path"])["artifact_key"] == manifest["key"]


def test_an_openvino_export_from_a_trace_with_external_weights(trained, exported, tmp_path):
    """A graph over 2 GB (the paper profile) keeps its weights in ``model.onnx.data`` beside ``model.onnx``: a
    conversion from such a trace must bring both."""
    import onnx

    trace = tmp_path / "trace"
    trace.mkdir()
    graph = onnx.load(str(exported["onnx_float32"] / "model.onnx"))
    onnx.save_model(graph, str(trace / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    assert (trace / "model.onnx.data").is_file()
    meta = export_detector(reference(trained), "openvino", tmp_path / "ov", "float32",
                           {"artifact_key": None, "thresholds": None}, traced=trace / "model.onnx")
    assert meta["parity"]["max_map_difference"] < MAP_TOLERANCE
    assert sorted(p.suffix for p in (tmp_path / "ov").iterdir()) == [".bin", ".json", ".xml"]
