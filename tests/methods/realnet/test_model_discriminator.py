"""Discriminator output sizes and layout."""

import pytest
import torch

from realnet_core.methods.realnet.discriminator import Discriminator


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


def test_logits_are_float32_under_bf16_autocast_so_nearby_pixels_do_not_tie() -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    d = Discriminator(8, hidden=32).eval()
    x = torch.randn(1, 8, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(x, (64, 64))
        h = F.interpolate(d.body(x), scale_factor=2, mode="bilinear", align_corners=True)  # bf16, as the head gets it
    assert h.dtype == torch.bfloat16 and logits.dtype == torch.float32
    with torch.no_grad():
        ref = F.interpolate(d.head(h.float()), size=(64, 64), mode="bilinear", align_corners=True)
    torch.testing.assert_close(logits, ref)
    # bf16 logits would leave a few dozen distinct values in a 64 x 64 map
    assert logits.diff(dim=1).unique().numel() > 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_logits_are_float32_under_cuda_autocast_eager_and_compiled() -> None:
    torch.manual_seed(0)
    d = Discriminator(64).cuda().eval()
    x = torch.randn(4, 64, 32, 32, device="cuda")
    with torch.no_grad():
        ref = d(x, (256, 256))  # float32 throughout
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = d(x, (256, 256))
            compiled = torch.compile(d)(x, (256, 256))
    for out in (eager, compiled):
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)  # bf16 body, float32 head


@pytest.mark.parametrize("leak", [0.0, 0.01])
def test_a_layer_pushed_below_zero_is_dead_with_relu_and_still_learns_with_a_leak(leak: float) -> None:
    torch.manual_seed(0)
    d = Discriminator(6, hidden=8, min_width=4, leak=leak)
    with torch.no_grad():
        d.head[0].bias.fill_(-1e3)  # every unit of the last narrow layer below zero for any input
    x = torch.randn(2, 6, 16, 16)
    out = d(x)
    out.square().sum().backward()
    varies = bool((out[0] - out[1]).abs().amax() > 0)
    learns = bool(d.head[0].weight.grad.abs().amax() > 0)
    assert varies == learns == (leak > 0)


def test_leak_must_lie_in_zero_to_one() -> None:
    with pytest.raises(ValueError, match="leak"):
        Discriminator(6, hidden=8, leak=1.0)
