"""The SimpleNet module (paper sec. 3; the authors' ``simplenet.py``).

Training: locally aggregated features q of normal images pass the feature adaptor; anomalous features are
q + N(0, noise_std^2) noise, drawn afresh per element and step; both pass the discriminator as one batch,
under the truncated loss mean(relu(m - D(q))) + mean(relu(m + D(q_noisy))).
Inference adds no noise: patch score = -D(adaptor(q)), the anomaly map is the patch scores upsampled
bilinearly to the input size and Gaussian-filtered (sigma 4), the image score the max of the raw patch scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .aggregation import local_aggregation
from .networks import Discriminator, FeatureAdaptor
from .smoothing import gaussian_blur


def margin_loss(true_scores: Tensor, fake_scores: Tensor, margin: float = 0.5) -> Tensor:
    """Eq. 6: zero exactly when every normal score is at least ``margin`` and every anomalous one at most
    ``-margin``; features already past their margin give no gradient."""
    return F.relu(margin - true_scores).mean() + F.relu(margin + fake_scores).mean()


class SimpleNet(nn.Module):
    """Feature adaptor + discriminator over frozen backbone features.

    ``layers`` are 1-based backbone layers (2 and 3: the code's layer2 and layer3), ``channels`` their
    channel counts; the backbone itself is not part of the module (it stays frozen and is not saved).
    """

    def __init__(self, channels: Sequence[int], layers: Sequence[int] = (2, 3), patch_size: int = 3,
                 pretrain_dim: int = 1536, target_dim: int = 1536, adaptor_bias: bool = True,
                 hidden: int = 1024, noise_std: float = 0.015, margin: float = 0.5, sigma: float = 4.0) -> None:
        super().__init__()
        if len(channels) != len(layers):
            raise ValueError(f"{len(layers)} layers {list(layers)} but {len(channels)} channel counts")
        self.channels, self.layers = [int(c) for c in channels], [int(layer) for layer in layers]
        self.patch_size, self.pretrain_dim, self.target_dim = patch_size, pretrain_dim, target_dim
        self.adaptor_bias, self.hidden = adaptor_bias, hidden
        self.noise_std, self.margin, self.sigma = noise_std, margin, sigma
        self.adaptor = FeatureAdaptor(target_dim, bias=adaptor_bias)
        self.discriminator = Discriminator(target_dim, hidden)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable arguments that rebuild this module (weights go in the state dict)."""
        return {"channels": self.channels, "layers": self.layers, "patch_size": self.patch_size,
                "pretrain_dim": self.pretrain_dim, "target_dim": self.target_dim,
                "adaptor_bias": self.adaptor_bias, "hidden": self.hidden, "noise_std": self.noise_std,
                "margin": self.margin, "sigma": self.sigma}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> SimpleNet:
        return cls(**cfg)

    def features(self, feats: Sequence[Tensor]) -> tuple[Tensor, tuple[int, int]]:
        """All backbone layers [f1, f2, f3, f4] -> ((B * h * w, target_dim) aggregated features q, (h, w))."""
        chosen = [feats[layer - 1] for layer in self.layers]
        got = [f.shape[1] for f in chosen]
        if got != self.channels:
            raise ValueError(f"SimpleNet was built for layers {self.layers} with {self.channels} channels, "
                             f"the backbone gave {got}")
        return local_aggregation(chosen, self.patch_size, self.pretrain_dim, self.target_dim)

    def patch_scores(self, feats: Sequence[Tensor]) -> Tensor:
        """(B, h, w) patch anomaly scores -D(adaptor(q)), without noise."""
        q, (h, w) = self.features(feats)
        return -self.discriminator(self.adaptor(q)).reshape(-1, h, w)

    def forward(self, feats: Sequence[Tensor], out_size: tuple[int, int]) -> dict[str, Tensor]:
        """Inference (call in eval mode): patch scores, the smoothed map at ``out_size`` and image scores."""
        scores = self.patch_scores(feats)
        up = F.interpolate(scores.unsqueeze(1), size=tuple(out_size), mode="bilinear", align_corners=False)
        return {"patch_scores": scores, "anomaly_map": gaussian_blur(up.squeeze(1), self.sigma),
                "image_score": scores.flatten(1).amax(dim=1)}

    def loss(self, q: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One training loss on aggregated features q (N, target_dim) of normal images (``features``); the
        noise comes from ``generator`` (on q's device). Returns the loss and the shares of features past
        their margin."""
        true = self.adaptor(q)
        noise = torch.randn(true.shape, generator=generator, device=true.device, dtype=true.dtype)
        fake = true + self.noise_std * noise
        scores = self.discriminator(torch.cat([true, fake]))  # one batch: BatchNorm sees both kinds
        t, f = scores[: len(true)], scores[len(true):]
        return {"total": margin_loss(t, f, self.margin),
                "p_true": (t.detach() >= self.margin).float().mean(),
                "p_fake": (f.detach() <= -self.margin).float().mean()}
