"""The inference path of any detector as one module: resize, the detector's own normalisation and
networks, the anomaly map back at the input size, and the method's image score."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stages.common import Detector


class InferenceGraph(nn.Module):
    """(B, 3, H, W) float RGB in [0, 1] -> ((B, H, W) anomaly maps, (B,) image scores).

    The input is resized to the model's ``image_size`` bilinearly with antialiasing (close to the
    INTER_AREA that ``realnet predict`` uses when it shrinks; an input already at that size passes
    unchanged), and the map is resized back bilinearly, as predict does with OpenCV.
    """

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        self.image_size = int(detector.image_size)
        # Registered as children, so that .eval(), .half() and the exporter see every weight.
        self.parts = nn.ModuleList(m for m in vars(detector).values() if isinstance(m, nn.Module))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2], images.shape[-1]
        size = (self.image_size, self.image_size)
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        maps, scores = self.detector.score(x)
        maps = F.interpolate(maps[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)
        return maps[:, 0], scores.float()
