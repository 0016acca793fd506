"""Discriminator output sizes."""

import torch

from realnet_core.model.discriminator import Discriminator


def test_output_size() -> None:
    d = Discriminator(6, hidden=8)
    x = torch.randn(2, 6, 16, 16)
    assert d(x).shape == (2, 2, 16, 16)
    assert d(x, (64, 64)).shape == (2, 2, 64, 64)
    assert d(x, (50, 70)).shape == (2, 2, 50, 70)
    d.eval()
    assert d(x[:1], (64, 64)).shape == (1, 2, 64, 64)
