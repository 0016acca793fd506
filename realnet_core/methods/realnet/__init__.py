"""RealNet's tensors: AFS channel scoring, reconstruction UNets, residual selection (RRS), discriminator."""

from .discriminator import Discriminator
from .realnet import RealNet
from .recon_unet import ReconUNet
from .rrs import ResidualSelector, concat_residuals

__all__ = ["Discriminator", "RealNet", "ReconUNet", "ResidualSelector", "concat_residuals"]
