"""PRN's training batches (sec. 4.1): half normal images, a quarter Extended Anomalies from the seen ones and a
quarter Simulated Anomalies; with no seen anomaly (``data.seen_anomalies: 0``) the extended quarter is
simulated too. Simulated anomalies take a texture (HEA) or a shuffled normal image (HOA), one half each
when ``prn.texture_root`` is set, else HOA only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from realnet_core.methods.prn.anomalies import colour_variant, extended_anomaly, shuffled_normal, simulated_anomaly
from realnet_core.synthesis.sources import TextureSource


@dataclass
class PRNData:
    images: np.ndarray  # (N, H, W, 3) uint8 normal training images
    foreground: np.ndarray  # (N, H, W) bool
    seen: np.ndarray  # (S, H, W, 3) uint8 seen anomalies (S may be 0)
    seen_masks: np.ndarray  # (S, H, W) bool
    textures: TextureSource | None
    beta: tuple[float, float]

    def counts(self, n: int) -> tuple[int, int, int]:
        """(normal, extended, simulated) samples of a batch of n."""
        normal = n // 2
        extended = n // 4 if len(self.seen) else 0
        return normal, extended, n - normal - extended

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(n, 3, H, W) float images in [0, 1], (n, 1, H, W) {0, 1} masks and each sample's kind
        (normal, extended, hea, hoa), all drawn from ``gen``."""
        n_normal, n_ext, n_sim = self.counts(n)
        size = self.images.shape[1]
        idx = torch.randint(0, len(self.images), (n,), generator=gen).numpy()
        seen_idx = torch.randint(0, max(1, len(self.seen)), (n_ext,), generator=gen).numpy()
        hoa_idx = torch.randint(0, len(self.images), (n_sim,), generator=gen).numpy()
        use_texture = (torch.rand(n_sim, generator=gen) < 0.5).numpy() & (self.textures is not None)
        textures = (self.textures.sample(n_sim, gen, size) if self.textures is not None and n_sim else None)
        images, masks, kinds = [], [], []
        for k, i in enumerate(idx):
            normal, fg = self.images[i], self.foreground[i]
            if k < n_normal:
                img, mask, kind = normal.astype(np.float32) / 255.0, np.zeros(fg.shape, bool), "normal"
            elif k < n_normal + n_ext:
                s = seen_idx[k - n_normal]
                img, mask = extended_anomaly(normal, fg, self.seen[s], self.seen_masks[s], gen, self.beta)
                kind = "extended"
            else:
                j = k - n_normal - n_ext
                if use_texture[j]:
                    tex = (textures[j].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
                    source, kind = colour_variant(tex, gen), "hea"
                else:
                    source, kind = shuffled_normal(self.images[hoa_idx[j]], gen), "hoa"
                img, mask = simulated_anomaly(normal, fg, source, gen, self.beta)
            images.append(img)
            masks.append(mask)
            kinds.append(kind)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        m = torch.from_numpy(np.stack(masks).astype(np.float32))[:, None]
        return x, m, kinds
