"""SimpleNet's tensors: the aggregation's shapes and order, the loss's margins, noise only in training,
the map's Gaussian filter and the image score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from realnet_core.methods.simplenet import SimpleNet, gaussian_blur, local_aggregation, margin_loss


def _code_order(feats: list[torch.Tensor], p: int, pre: int, target: int) -> torch.Tensor:
    """The authors' order of operations: unfold every layer, resize each deeper layer's neighbourhood grids
    to the first layer's, then pool each layer's vectors, stack and pool again."""
    b, _, h, w = feats[0].shape
    vecs = []
    for f in feats:
        c, hl, wl = f.shape[1:]
        cols = F.unfold(f, p, padding=p // 2).reshape(b, c * p * p, hl, wl)
        cols = F.interpolate(cols, size=(h, w), mode="bilinear", align_corners=False)
        rows = cols.reshape(b, c * p * p, h * w).transpose(1, 2).reshape(b * h * w, 1, -1)
        vecs.append(F.adaptive_avg_pool1d(rows, pre).squeeze(1))
    stacked = torch.stack(vecs, 1).reshape(b * h * w, 1, -1)
    return F.adaptive_avg_pool1d(stacked, target).squeeze(1)


def test_aggregation_gives_one_vector_per_layer2_position_from_both_layers():
    # WideResNet50's layer2 (512 channels, stride 8) and layer3 (1024, stride 16) at 64 px.
    layer2, layer3 = torch.randn(2, 512, 8, 8), torch.randn(2, 1024, 4, 4)
    q, grid = local_aggregation([layer2, layer3], 3, 1536, 1536)
    assert grid == (8, 8) and q.shape == (2 * 8 * 8, 1536)
    # layer2's 512 x 9 values pool into the first half, layer3's 1024 x 9 into the second.
    q2, _ = local_aggregation([layer2, torch.zeros_like(layer3)], 3, 1536, 1536)
    assert q2[:, 768:].abs().max() == 0 and q2[:, :768].abs().max() > 0
    q3, _ = local_aggregation([torch.zeros_like(layer2), layer3], 3, 1536, 1536)
    assert q3[:, :768].abs().max() == 0 and q3[:, 768:].abs().max() > 0


def test_aggregation_pools_before_resizing_as_the_code_does_after():
    feats = [torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4)]
    ours, _ = local_aggregation(feats, 3, 96, 64)
    assert torch.allclose(ours, _code_order(feats, 3, 96, 64), atol=1e-5)


def test_the_loss_is_zero_exactly_when_both_margins_hold():
    true, fake = torch.tensor([0.5, 0.9, 2.0]), torch.tensor([-0.5, -1.0, -3.0])
    assert margin_loss(true, fake, 0.5) == 0
    assert margin_loss(torch.tensor([0.49, 0.9, 2.0]), fake, 0.5) > 0
    assert margin_loss(true, torch.tensor([-0.5, -0.49, -3.0]), 0.5) > 0
    # the hinge: 0.1 short of the normal margin on one of three, 0.2 short of the anomalous one on one of three
    got = margin_loss(torch.tensor([0.4, 0.9, 2.0]), torch.tensor([-0.3, -1.0, -3.0]), 0.5)
    assert got == pytest.approx(0.1 / 3 + 0.2 / 3)


def _net() -> tuple[SimpleNet, list[torch.Tensor]]:
    torch.manual_seed(0)
    net = SimpleNet([40, 112], (2, 3), pretrain_dim=48, target_dim=32, hidden=16)
    feats = [torch.randn(2, 24, 16, 16), torch.randn(2, 40, 8, 8), torch.randn(2, 112, 4, 4),
             torch.randn(2, 320, 2, 2)]
    return net, feats


def test_training_adds_fresh_noise_and_inference_none():
    net, feats = _net()
    q, _ = net.features(feats)
    a = net.loss(q, torch.Generator().manual_seed(1))["total"]
    assert a != net.loss(q, torch.Generator().manual_seed(2))["total"], "the noise is drawn each step"
    net.eval()
    with torch.no_grad():
        out = net(feats, (64, 64))
        again = net(feats, (64, 64))
        by_hand = -net.discriminator(net.adaptor(q)).reshape(2, 8, 8)
    assert torch.equal(out["patch_scores"], again["patch_scores"])
    assert torch.allclose(out["patch_scores"], by_hand)


def test_the_image_score_is_the_max_raw_patch_score_and_the_map_is_smoothed_at_the_input_size():
    net, feats = _net()
    net.eval()
    with torch.no_grad():
        out = net(feats, (64, 64))
    assert out["anomaly_map"].shape == (2, 64, 64)
    assert torch.equal(out["image_score"], out["patch_scores"].flatten(1).amax(1))
    assert (out["anomaly_map"].flatten(1).amax(1) < out["image_score"]).all(), "the filter lowers the peaks"


@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 40, 30)])
def test_the_gaussian_filter_matches_scipy(shape):
    maps = torch.randn(*shape)
    ours = gaussian_blur(maps, 4.0).numpy()
    reference = np.stack([gaussian_filter(m.double().numpy(), sigma=4) for m in maps])
    assert np.abs(ours - reference).max() < 1e-5


def test_the_model_refuses_backbone_layers_of_other_widths():
    net, feats = _net()
    with pytest.raises(ValueError, match=r"layers \[2, 3\] with \[40, 112\] channels, the backbone gave \[24, 40\]"):
        net.features(feats[0:1] + feats[0:3])


def test_the_config_rebuilds_the_module():
    net, _ = _net()
    assert SimpleNet.from_config(net.config()).config() == net.config()


@pytest.mark.parametrize("k, size", [(4608, 1536), (360, 384), (1008, 384), (7, 3)])
def test_vector_pooling_is_adaptive_average_pooling(k, size):
    from realnet_core.methods.simplenet.aggregation import pool_vectors

    x = torch.randn(5, k)
    reference = F.adaptive_avg_pool1d(x.unsqueeze(1), size).squeeze(1)
    assert torch.allclose(pool_vectors(x, size), reference, atol=1e-6)


def test_vector_pooling_traced_first_still_runs_eagerly_after():
    # `realnet export` of a fresh process traces the pooling before any eager call: what the trace makes
    # must not be kept for the eager calls after it (the parity check, then predict).
    from realnet_core.methods.simplenet import aggregation

    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return aggregation.pool_vectors(x, 384)

    aggregation._bins.cache_clear()
    x = torch.randn(5, 360)
    torch.export.export(Pool(), (x,))
    reference = F.adaptive_avg_pool1d(x.unsqueeze(1), 384).squeeze(1)
    assert torch.allclose(aggregation.pool_vectors(x, 384), reference, atol=1e-6)
