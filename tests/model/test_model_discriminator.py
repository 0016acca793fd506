"""Discriminator output sizes and layout."""

import torch

from realnet_core.model.discriminator import Discriminator


def test_output_size() -> None:
    d = Discriminator(6, hidden=8)
    x = torch.randn(2, 6, 16, 16)
    assert d(x).shape == (2, 2, 32, 32)  # one x2 upsampling inside
    assert d(x, (64, 64)).shape == (2, 2, 64, 64)
    assert d(x, (50, 70)).shape == (2, 2, 50, 70)
    d.eval()
    assert d(x[:1], (64, 64)).shape == (1, 2, 64, 64)


def test_widths_follow_the_authors_decoder() -> None:
    d = Discriminator(512)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    # Two residual units at r (3x3 then 1x1 each), then 512 -> 128 -> 32 -> 8 -> 4 -> 2.
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (512, 512, 3), (512, 512, 1), (512, 512, 3), (512, 512, 1),
        (512, 128, 3), (128, 32, 3), (32, 8, 3), (8, 4, 3), (4, 2, 3),
    ]
