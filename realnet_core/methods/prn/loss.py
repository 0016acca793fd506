"""PRN's loss (Eq. 5): SmoothL1(M_o, M) + lambda x focal(M_o, M), lambda = 5, focal alpha 0.5 and gamma 4
(sec. 4.1). M_o is the decoder's sigmoid map; the focal term is computed from its logits for stability."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, gamma: float = 4.0) -> torch.Tensor:
    """Binary focal loss, mean over pixels: -alpha_t (1 - p_t)^gamma log p_t, p_t the probability of the true class."""
    log_p = F.logsigmoid(logits)
    log_q = F.logsigmoid(-logits)  # log(1 - p)
    log_pt = target * log_p + (1 - target) * log_q
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    return (-alpha_t * (1 - log_pt.exp()) ** gamma * log_pt).mean()


def prn_loss(logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 5.0, alpha: float = 0.5,
             gamma: float = 4.0) -> dict[str, torch.Tensor]:
    """Eq. 5 on (B, 1, H, W) logits and {0, 1} masks: {"total", "smooth_l1", "focal"}."""
    smooth = F.smooth_l1_loss(torch.sigmoid(logits), target)
    focal = focal_loss(logits, target, alpha, gamma)
    return {"total": smooth + focal_weight * focal, "smooth_l1": smooth, "focal": focal}
