"""PRN's loss on known inputs: SmoothL1 on the sigmoid map plus 5 x focal (alpha 0.5, gamma 4)."""

import math

import pytest
import torch

from realnet_core.methods.prn import focal_loss, prn_loss


def test_focal_loss_at_known_probabilities():
    # p = 0.5 on a positive pixel: 0.5 x (1 - 0.5)^4 x ln 2.
    one = torch.ones(1, 1, 1, 1)
    assert focal_loss(0 * one, one).item() == pytest.approx(0.5 * 0.5 ** 4 * math.log(2))
    # p = sigmoid(2) = 0.881 on a negative pixel: p_t = 0.119.
    p = 1 / (1 + math.exp(-2))
    expected = 0.5 * p ** 4 * -math.log(1 - p)
    assert focal_loss(2 * one, 0 * one).item() == pytest.approx(expected, rel=1e-5)
    # gamma = 0 and alpha = 0.5 is half the binary cross-entropy.
    logits, target = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert focal_loss(logits, target, 0.5, 0.0).item() == pytest.approx(0.5 * bce.item(), rel=1e-5)


def test_total_is_smooth_l1_plus_five_focal():
    logits = torch.tensor([[[[0.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    loss = prn_loss(logits, target)
    p = 1 / (1 + math.exp(-4))
    smooth = (0.5 * 0.5 ** 2 + 0.5 * p ** 2) / 2  # |d| < 1: 0.5 d^2
    focal = (0.5 * 0.5 ** 4 * math.log(2) + 0.5 * p ** 4 * -math.log(1 - p)) / 2
    assert loss["smooth_l1"].item() == pytest.approx(smooth, rel=1e-5)
    assert loss["focal"].item() == pytest.approx(focal, rel=1e-4)
    assert loss["total"].item() == pytest.approx(smooth + 5 * focal, rel=1e-4)
    assert prn_loss(torch.full((1, 1, 2, 2), -30.0), torch.zeros(1, 1, 2, 2))["total"].item() < 1e-10
