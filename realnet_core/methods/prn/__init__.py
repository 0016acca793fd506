"""PRN's tensors (Prototypical Residual Network, CVPR 2023): prototypes and residuals, multi-scale fusion,
multi-size self-attention, the decoder, its loss and its extended and simulated anomalies."""

from .loss import focal_loss, prn_loss
from .network import PRN, MultiScaleFusion, MultiSizeAttention, SegmentationDecoder
from .prototypes import fit_prototypes, nearest_prototype, prototype_residual

__all__ = ["PRN", "MultiScaleFusion", "MultiSizeAttention", "SegmentationDecoder", "fit_prototypes", "focal_loss",
           "nearest_prototype", "prn_loss", "prototype_residual"]
