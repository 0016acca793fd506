"""SimpleNet's tensors (Liu et al., CVPR 2023): local aggregation of frozen backbone features, the feature
adaptor, Gaussian feature noise, the discriminator and its truncated margin loss."""

from .aggregation import local_aggregation
from .networks import Discriminator, FeatureAdaptor
from .simplenet import SimpleNet, margin_loss
from .smoothing import gaussian_blur

__all__ = ["Discriminator", "FeatureAdaptor", "SimpleNet", "gaussian_blur", "local_aggregation", "margin_loss"]
