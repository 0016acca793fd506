"""Multi-scale prototypes (PRN sec. 3.1, Eq. 1).

Per scale j, K prototype feature maps P_j (K, c, h, w) are the k-means centres of the normal training
images' whole flattened maps F_j (one point per image, L2 distance), started from K randomly sampled maps as
the paper says. An image's residual at scale j is D = (F - P*)^2 with P* its nearest prototype by L2 over the
whole map; each scale picks its own prototype.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_prototypes(features: np.ndarray, k: int, seed: int, max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """k-means of (N, c, h, w) feature maps into ``k`` prototypes: ((k, c, h, w) centres, (N,) cluster of each map).

    ``init="random"`` with one run: K maps sampled at random, then Lloyd updates (at most ``max_iter``, the
    paper's 300); the same ``seed`` gives the same prototypes.
    """
    if features.ndim != 4:
        raise ValueError(f"expected (N, c, h, w) feature maps, got shape {features.shape}")
    n = len(features)
    if not 1 <= k <= n:
        raise ValueError(f"k={k} prototypes need 1 <= k <= {n} (the number of feature maps)")
    flat = features.reshape(n, -1).astype(np.float32)
    from sklearn.cluster import KMeans  # here, not at import: a run that builds no prototypes never loads it

    km = KMeans(n_clusters=k, init="random", n_init=1, max_iter=max_iter, random_state=seed).fit(flat)
    return km.cluster_centers_.astype(np.float32).reshape(k, *features.shape[1:]), km.labels_.astype(np.int64)


def nearest_prototype(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """(B, c, h, w) maps and (K, c, h, w) prototypes -> (B,) index of each map's nearest prototype (L2).

    ||f - p||^2 = ||f||^2 - 2 f.p + ||p||^2 as one matmul: plain ops that trace to ONNX.
    """
    f = features.flatten(1)
    p = prototypes.flatten(1).to(f.dtype)
    d2 = (f * f).sum(1, keepdim=True) - 2 * f @ p.T + (p * p).sum(1)[None]
    return d2.argmin(dim=1)


def prototype_residual(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Eq. 1: D = (F - P*)^2, element-wise, with P* the nearest prototype of each map."""
    nearest = prototypes.to(features.dtype)[nearest_prototype(features, prototypes)]
    return (features - nearest) ** 2
