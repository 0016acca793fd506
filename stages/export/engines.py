"""Exported graphs behind the detector seam: ``image_size`` and ``score(images) -> (maps, scores)``, so that
``realnet predict`` and the bench run them exactly where they run the PyTorch detector."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from stages.export.write import INPUT, OUTPUTS, as_numpy, read_metadata

ENGINES: tuple[str, ...] = ("torch", "onnx", "openvino")


class ExportedDetector:
    """What every engine shares: the export's metadata (image size, thresholds, method) and its folder."""

    def __init__(self, folder: str | Path, fmt: str) -> None:
        self.folder = Path(folder)
        self.metadata = read_metadata(folder)
        if self.metadata.get("format") != fmt:
            got = self.metadata.get("format")
            raise ValueError(f"{self.folder}: exported for {got}, not {fmt}; give --engine {got}")
        self.image_size = int(self.metadata["image_size"])
        self.thresholds: Any = self.metadata.get("thresholds")
        self.method = self.metadata.get("method")
        self.graph = self.folder / self.metadata["graph"]

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        return self.score(images)[0]

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError


class OnnxDetector(ExportedDetector):
    """onnxruntime: the CUDA provider for a CUDA device where it is installed, else the CPU provider."""

    def __init__(self, folder: str | Path, device: torch.device) -> None:
        import onnxruntime as ort

        super().__init__(folder, "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the thread count runtime.threads set
        options.log_severity_level = 3  # errors only: its notes on unused initialisers are not the user's
        cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
        if device.type == "cuda" and not cuda:
            print(f"realnet: warning: {device} asked, but this onnxruntime has no CUDA provider (install "
                  "onnxruntime-gpu for it); running on the CPU", file=sys.stderr)
        providers: list[Any] = ["CPUExecutionProvider"]
        if cuda:
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
        self.session = ort.InferenceSession(str(self.graph), options, providers=providers)
        self.provider = self.session.get_providers()[0]

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, scores = self.session.run(list(OUTPUTS), {INPUT: as_numpy(images)})
        return torch.from_numpy(maps), torch.from_numpy(scores)


class OpenVinoDetector(ExportedDetector):
    """OpenVINO on the CPU, computing in float32 for a float32 export (some CPUs would default to bf16)."""

    def __init__(self, folder: str | Path, device: torch.device) -> None:
        import openvino as ov

        super().__init__(folder, "openvino")
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": torch.get_num_threads()}
        if self.metadata.get("precision") == "float32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = ov.Core().compile_model(str(self.graph), "CPU", config)
        self.provider = "CPU"

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        request = self.compiled.create_infer_request()
        request.infer({0: as_numpy(images)})
        maps, scores = (request.get_output_tensor(i).data.copy() for i in range(2))
        return torch.from_numpy(maps), torch.from_numpy(scores)


def load_engine(engine: str, folder: str | Path, device: torch.device) -> ExportedDetector:
    """The detector of an export folder for ``engine`` (onnx or openvino)."""
    if engine == "onnx":
        return OnnxDetector(folder, device)
    if engine == "openvino":
        return OpenVinoDetector(folder, device)
    raise ValueError(f"--engine {engine!r}: unknown engine for an exported model; engines: onnx, openvino")
