"""The image sizes PRN can run at."""

from __future__ import annotations

from realnet_core.config import ConfigError
from realnet_core.methods.prn.anomalies import GRID

STRIDE = 16  # the coarsest encoder scale (layer3)


def check_size(size: int) -> None:
    """PRN's three scales (strides 4, 8, 16) and HOA's 8 x 8 grid need the image side to be a multiple of 16."""
    if size % STRIDE or size % GRID:
        raise ConfigError(f"data.image_size={size}: PRN needs a multiple of {STRIDE} (its layer3 scale)")
