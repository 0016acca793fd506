"""ResidualSelector: hand-made ranking cases, raw gathering, per-image choices, shapes."""

import pytest
import torch

from realnet_core.methods.realnet.rrs import ResidualSelector, concat_residuals


def _hand_made() -> torch.Tensor:
    """(2, 6, 4, 4) residuals. Image 0: channel 1 has a single huge spike (large max, small mean),
    channel 4 is moderately high everywhere (large mean, modest max). Image 1 swaps the roles to
    channels 2 and 5. Other channels are small noise."""
    g = torch.Generator().manual_seed(0)
    e = 0.01 * torch.rand(2, 6, 4, 4, generator=g)
    e[0, 1, 0, 0] = 5.0
    e[0, 4] += 1.0
    e[1, 2, 3, 3] = 5.0
    e[1, 5] += 1.0
    return e


def test_picks_by_max_and_by_mean_and_gathers_raw_values() -> None:
    e = _hand_made()
    sel = ResidualSelector(6, ratio=1 / 3).eval()  # r = 2 (1 by max, 1 by mean)
    # Identity running stats in eval: ranking = ranking of the raw values, easy to reason about.
    out, idx = sel([e], return_indices=True)
    assert sel.out_channels == 2
    assert out.shape == (2, 2, 4, 4)
    # Channel 1's max (5.0) beats channel 4's (about 1.0); channel 4's mean (1.0) beats channel 1's
    # (5/16 = 0.31).
    assert idx[0].tolist() == [1, 4]
    assert idx[1].tolist() == [2, 5]
    # Different images, different channels; raw residuals gathered.
    torch.testing.assert_close(out[0], e[0, [1, 4]])
    torch.testing.assert_close(out[1], e[1, [2, 5]])


def test_ranking_uses_normalised_but_output_is_raw() -> None:
    # Channel 0 has a large scale on every image (e.g. a layer whose residuals are just larger);
    # after per-channel BatchNorm its values are ordinary, so the relatively extreme channel 2 wins.
    g = torch.Generator().manual_seed(1)
    e = torch.rand(4, 3, 5, 5, generator=g)
    e[:, 0] = e[:, 0] * 0.1 + 100.0
    e[:, 2, 2, 2] += 4.0
    sel = ResidualSelector(3, ratio=2 / 3)  # k = 1 per mode
    sel.train()
    out, idx = sel([e], return_indices=True)
    assert (idx[:, 0] == 2).all()  # by max, after normalisation
    # Without normalisation channel 0 would win both: check gathered values are raw (about 100).
    # Bit for bit: the raw path hands on the input itself, never a BatchNorm round trip.
    mean_pick = idx[:, 1]
    assert torch.equal(out[:, 0], e[:, 2])
    for b in range(4):
        assert torch.equal(out[b, 1], e[b, mean_pick[b]])
    assert sel.bn.num_batches_tracked.item() == 1
    assert not torch.allclose(sel.bn.running_mean, torch.zeros(3))


def test_multi_scale_upsampling_and_shape() -> None:
    torch.manual_seed(0)
    res = [torch.rand(2, 4, 16, 16), torch.rand(2, 6, 8, 8), torch.rand(2, 6, 4, 4), torch.rand(2, 2, 2, 2)]
    cat = concat_residuals(res)
    assert cat.shape == (2, 18, 16, 16)
    sel = ResidualSelector(18)  # r = 2 * round(3) = 6
    out = sel(res)
    assert out.shape == (2, 6, 16, 16)
    # Constant maps stay constant after bilinear upsampling: the layer-4 block is where it belongs.
    const = [torch.zeros(1, 1, 8, 8), torch.full((1, 1, 2, 2), 3.0)]
    torch.testing.assert_close(concat_residuals(const)[0, 1], torch.full((8, 8), 3.0))


def test_paper_setting_gives_256_plus_256() -> None:
    assert ResidualSelector(1536).out_channels == 512


def test_gradient_flows_to_residuals() -> None:
    e = torch.rand(2, 6, 4, 4, requires_grad=True)
    ResidualSelector(6).eval()([e]).sum().backward()
    assert e.grad is not None and e.grad.abs().sum() > 0


def test_wrong_width_rejected() -> None:
    with pytest.raises(ValueError):
        ResidualSelector(5)([torch.rand(1, 6, 4, 4)])


def test_normed_gathers_the_normalised_residuals_it_ranked() -> None:
    # The same large-scale channel 0 as above: output="normed" hands the discriminator the BatchNorm output,
    # channel by channel on one scale, with the same picks and one update of the running statistics.
    g = torch.Generator().manual_seed(1)
    e = torch.rand(4, 3, 5, 5, generator=g)
    e[:, 0] = e[:, 0] * 0.1 + 100.0
    e[:, 2, 2, 2] += 4.0
    raw_sel, normed_sel = ResidualSelector(3, ratio=2 / 3), ResidualSelector(3, ratio=2 / 3, output="normed")
    _, raw_idx = raw_sel([e], return_indices=True)
    x = e.clone().requires_grad_(True)
    out, idx = normed_sel([x], return_indices=True)
    assert torch.equal(idx, raw_idx)
    assert normed_sel.bn.num_batches_tracked.item() == 1
    normed = torch.nn.functional.batch_norm(e, None, None, training=True)
    for b in range(4):
        torch.testing.assert_close(out[b], normed[b, idx[b]])
    assert out.abs().max() < 10  # channel 0's raw 100 is gone
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_paired_hands_over_the_raw_then_the_normalised_copy_of_each_pick() -> None:
    g = torch.Generator().manual_seed(4)
    e = torch.rand(4, 6, 5, 5, generator=g) * torch.tensor([100.0, 1, 1, 1, 1, 0.01])[None, :, None, None]
    raw_sel, paired_sel = ResidualSelector(6), ResidualSelector(6, output="paired")
    raw, idx = raw_sel([e], return_indices=True)
    x = e.clone().requires_grad_(True)
    out = paired_sel([x])
    r = raw_sel.out_channels
    assert paired_sel.out_channels == out.shape[1] == 2 * r
    torch.testing.assert_close(out[:, :r], raw)
    normed = torch.nn.functional.batch_norm(e, None, None, training=True)
    for b in range(4):
        torch.testing.assert_close(out[b, r:], normed[b, idx[b]])
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_output_rejected() -> None:
    with pytest.raises(ValueError, match="output"):
        ResidualSelector(3, output="log")
