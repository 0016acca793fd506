"""``realnet export``: a model artifact -> a folder holding one ONNX or OpenVINO graph and ``export.json``.

The graph is :class:`InferenceGraph` traced by ``torch.export`` and written by the dynamo ONNX exporter
(onnxscript): the TorchScript exporter has no antialiased resize. Batch, height and width are dynamic.
OpenVINO's IR is converted from that ONNX graph. The folder is built beside ``out`` and renamed into place
once its graph, a parity check against PyTorch and the metadata are written, so that a failed export never
leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stages import calibrate, methods
from stages.common import Method
from stages.export.graph import InferenceGraph

FORMATS: tuple[str, ...] = ("onnx", "openvino")
PRECISIONS: tuple[str, ...] = ("float32", "float16")
GRAPH_FILE = {"onnx": "model.onnx", "openvino": "model.xml"}
METADATA = "export.json"
OPSET = 18
INPUT, OUTPUTS = "images", ("maps", "scores")


def check_request(fmt: str, precision: str, out: str | Path) -> Path:
    """The output folder, after refusing an unknown format or precision and an existing non-empty folder."""
    if fmt not in FORMATS:
        raise ValueError(f"--format {fmt!r}: unknown format; formats: {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: unknown precision; precisions: {', '.join(PRECISIONS)}")
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"--out {path}: exists and is not an empty folder; give a new or an empty folder")
    return path


def artifact_info(model: str | Path) -> dict[str, Any]:
    """Key, stage, dataset and category of the artifact holding ``model`` (a folder or a file in one), from its
    manifest (the thresholds come from its calibrate artifact: ``stages.calibrate.model_and_thresholds``)."""
    p = Path(model)
    folder = p if p.is_dir() else p.parent
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return {"artifact_key": None, "thresholds": None}
    return {"artifact_key": manifest.get("key"), "stage": manifest.get("stage"),
            "dataset": manifest.get("dataset"), "category": manifest.get("category"), "thresholds": None}


def method_of(detector: Any) -> Method:
    """The registered method whose stages' package defines the detector's class."""
    module = type(detector).__module__
    for method in methods.METHODS.values():
        package = method.stages[0].__name__.rpartition(".")[0]
        if module == package or module.startswith(package + "."):
            return method
    raise ValueError(f"{type(detector).__name__}: no registered method defines this detector")


def check_images(size: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth random colour fields with fine noise in [0, 1]: the parity check's input."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.rand(n, 3, size, size, generator=gen)).clamp(0, 1)


def _export_onnx(graph: InferenceGraph, path: Path) -> None:
    sample = check_images(graph.image_size)  # batch 2: a batch of 1 would be specialised as a constant
    dims = {0: torch.export.Dim("batch", min=1, max=4096), 2: torch.export.Dim("height", min=2, max=16384),
            3: torch.export.Dim("width", min=2, max=16384)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on deprecated torch internals
        program = torch.onnx.export(graph, (sample,), dynamo=True, dynamic_shapes=(dims,), opset_version=OPSET,
                                    input_names=[INPUT], output_names=list(OUTPUTS), verbose=False,
                                    optimize=False)  # half the export's time; both runtimes optimise on load
    program.save(str(path))


def _to_float16(path: Path) -> None:
    """Weights and activations in float16, the graph's input and outputs kept float32."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    onnx.save(half, str(path))


def _to_openvino(onnx_path: Path, xml: Path, metadata: dict[str, Any]) -> None:
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    for key, value in metadata.items():
        model.set_rt_info(json.dumps(value), ["realnet", key])
    ov.save_model(model, str(xml), compress_to_fp16=False)  # float16 exports are float16 in the ONNX already


def _onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    """The metadata as the ONNX model's metadata_props too (each value JSON), for tools that read only it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def parity(graph: InferenceGraph, engine: Any, images: torch.Tensor) -> dict[str, float]:
    """Largest absolute differences of the exported graph's maps and scores from PyTorch's on ``images``."""
    with torch.no_grad():
        maps, scores = graph(images)
    got_maps, got_scores = engine.score(images)
    return {"max_map_difference": float((got_maps - maps).abs().max()),
            "max_score_difference": float((got_scores - scores).abs().max())}


def export_model(model: str | Path, fmt: str, out: str | Path, precision: str = "float32") -> dict[str, Any]:
    """Export ``model`` (a model artifact folder or its model file) to ``out``; returns the metadata written."""
    out = check_request(fmt, precision, out)
    model, thresholds = calibrate.model_and_thresholds(model)
    # float32 on the CPU (autocast is for GPUs); the graph scores images as the thresholds were set.
    detector = calibrate.score_as_calibrated(methods.load_detector(model, torch.device("cpu")), thresholds)
    info = {**artifact_info(model), "thresholds": thresholds, "model": str(model)}
    return export_detector(detector, fmt, out, precision, info)


def export_detector(detector: Any, fmt: str, out: str | Path, precision: str = "float32",
                    info: dict[str, Any] | None = None, traced: Path | None = None) -> dict[str, Any]:
    """Export a CPU detector of a registered method to ``out``, with ``info`` (artifact key, thresholds) in its
    metadata; the bench exports its random-weight models through here. ``traced``: the float32 ``model.onnx``
    of an earlier export of this same detector, converted instead of tracing again (the trace is most of the
    time; the bench makes both formats from one)."""
    from stages.export.engines import load_engine

    out = check_request(fmt, precision, out)
    method = method_of(detector)
    graph = InferenceGraph(detector).eval()
    metadata: dict[str, Any] = {
        "format": fmt, "precision": precision, "method": method.name,
        **(info or {"artifact_key": None, "thresholds": None}),
        "image_size": graph.image_size, "graph": GRAPH_FILE[fmt],
        "input": {"name": INPUT, "shape": ["batch", 3, "height", "width"], "dtype": "float32",
                  "layout": "NCHW", "colour": "RGB", "range": [0.0, 1.0]},
        "preprocessing": f"in the graph: bilinear antialiased resize to {graph.image_size} x {graph.image_size}, "
                         f"then the normalisation of the {method.name} model",
        "outputs": {OUTPUTS[0]: "(batch, height, width) anomaly maps at the input size, higher is more anomalous",
                    OUTPUTS[1]: f"(batch,) image scores by the {method.name} rule"},
        "opset": OPSET, "exporter": "torch.export + torch.onnx (dynamo, onnxscript)", "torch": torch.__version__,
    }
    if hasattr(detector, "pool"):
        metadata["pool"] = int(detector.pool)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        onnx_path = stage / GRAPH_FILE["onnx"]
        source = f"{metadata['model']} ({method.name})" if metadata.get("model") else f"a {method.name} detector"
        print(f"exporting {source} to {fmt} {precision} ...", file=sys.stderr)
        if traced is None:
            _export_onnx(graph, onnx_path)
        else:
            for part in traced.parent.glob(f"{traced.name}*"):  # the graph and its external weights (.onnx.data)
                shutil.copyfile(part, stage / part.name)
        if precision == "float16":
            _to_float16(onnx_path)
        if fmt == "onnx":
            _onnx_metadata(onnx_path, metadata)
        else:
            _to_openvino(onnx_path, stage / GRAPH_FILE["openvino"], metadata)
            for leftover in stage.iterdir():  # the ONNX graph (and any external weights) was only a step
                if leftover.suffix not in (".xml", ".bin"):
                    leftover.unlink()
        (stage / METADATA).write_text(json.dumps({**metadata, "parity": None}))
        cpu = torch.device("cpu")
        metadata["parity"] = parity(graph, load_engine(fmt, stage, cpu), check_images(graph.image_size, seed=1))
        (stage / METADATA).write_text(json.dumps(metadata, indent=1))
        if out.exists():
            out.rmdir()  # empty, checked above
        stage.rename(out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return metadata


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an export folder, checked to name its graph file, which must exist."""
    path = Path(folder) / METADATA
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {folder} (give a folder written by `realnet export`)")
    try:
        meta = json.loads(path.read_text())
        graph = Path(folder) / meta["graph"]
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"{path}: damaged export metadata ({problem}); export the model again") from exc
    if not graph.is_file():
        raise FileNotFoundError(f"{graph}: the graph named in {path} is missing; export the model again")
    return meta


def as_numpy(images: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
