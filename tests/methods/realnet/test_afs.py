"""Tests for Anomaly-aware Features Selection (Eq. 4)."""

import pytest
import torch
import torch.nn.functional as F

from realnet_core.methods.realnet.afs import AFSAccumulator, afs_batch_losses, afs_table, select_channels


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _masks(b: int, s: int, seed: int) -> torch.Tensor:
    return (
        (torch.rand(b, 1, s // 4, s // 4, generator=_gen(seed)) > 0.7)
        .float()
        .repeat_interleave(4, 2)
        .repeat_interleave(4, 3)
    )


def test_channel_matching_the_mask_is_selected():
    b, c, h = 4, 8, 8
    masks = _masks(b, 32, 1)
    mask_small = F.interpolate(masks, size=(h, h), mode="nearest")
    g = _gen(2)
    normal = torch.randn(b, c, h, h, generator=g)
    anom = normal + 0.5 * torch.randn(b, c, h, h, generator=g)
    anom[:, 5] = normal[:, 5] + 3.0 * mask_small[:, 0]  # (A - I)^2 = 9 M: normalises to M exactly
    anom[:, 2] = normal[:, 2]  # constant (zero) difference: loss = mean(M^2)
    losses = afs_batch_losses([anom], [normal], masks)
    assert losses[0].shape == (c,)
    assert float(losses[0][5]) == pytest.approx(0.0, abs=1e-10)
    assert int(losses[0].argmin()) == 5
    per_image = mask_small.mean(dim=(1, 2, 3))  # mean((0 - M)^2) for each image
    assert float(losses[0][2]) == pytest.approx(float(per_image.sum()), rel=1e-6)  # summed, not averaged
    sel = select_channels([losses[0] / b], [3])
    assert 5 in sel[0].tolist() and sel[0].tolist() == sorted(sel[0].tolist())


def _loop_reference(fa, fn, masks):
    """Plain per-channel, per-image implementation of Eq. 4 (summed over images)."""
    b, c, h, w = fa.shape
    m = F.interpolate(masks, size=(h, w), mode="nearest")
    d = (fa - fn) ** 2
    out = torch.zeros(c, dtype=torch.float64)
    for ch in range(c):
        lo, hi = d[:, ch].min(), d[:, ch].max()
        dn = (d[:, ch] - lo) / max(float(hi - lo), 1e-12)
        for n in range(b):
            out[ch] += float(((dn[n] - m[n, 0]) ** 2).mean())
    return out


def test_vectorised_matches_loop():
    g = _gen(3)
    masks = _masks(3, 32, 4)
    shapes = [(3, 6, 8, 8), (3, 5, 4, 4)]
    fa = [torch.randn(s, generator=g) for s in shapes]
    fn = [torch.randn(s, generator=g) for s in shapes]
    got = afs_batch_losses(fa, fn, masks)
    for k in range(2):
        torch.testing.assert_close(got[k], _loop_reference(fa[k], fn[k], masks), rtol=1e-5, atol=1e-7)


def test_accumulator_mean_and_reproducibility():
    g = _gen(5)
    batches = []
    for i in range(3):
        masks = _masks(2, 16, 10 + i)
        fa = [torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 3, 2, 2, generator=g)]
        fn = [torch.randn(2, 4, 4, 4, generator=g), torch.randn(2, 3, 2, 2, generator=g)]
        batches.append((fa, fn, masks))

    def run():
        acc = AFSAccumulator([4, 3])
        for fa, fn, m in batches:
            acc.update(fa, fn, m)
        return acc

    acc = run()
    assert acc.count == 6
    expected = [sum(afs_batch_losses(fa, fn, m)[k] for fa, fn, m in batches) / 6 for k in range(2)]
    for k in range(2):
        torch.testing.assert_close(acc.losses()[k], expected[k])
        assert torch.equal(acc.losses()[k], run().losses()[k])
    with pytest.raises(ValueError, match="layer2"):
        acc.update([batches[0][0][0], batches[0][0][0]], [batches[0][1][0], batches[0][1][0]], batches[0][2])
    with pytest.raises(RuntimeError):
        AFSAccumulator([4]).losses()


def test_select_ties_and_errors():
    loss = torch.tensor([0.3, 0.1, 0.1, 0.2, 0.1], dtype=torch.float64)
    assert select_channels([loss], [2])[0].tolist() == [1, 2]  # ties broken by channel index
    assert select_channels([loss], [4])[0].tolist() == [1, 2, 3, 4]
    assert select_channels([loss], [4])[0].dtype == torch.long
    with pytest.raises(ValueError, match="layer1.*6"):
        select_channels([loss], [6])
    with pytest.raises(ValueError, match="block3"):
        select_channels([loss, loss, loss], [1, 1, 9], layer_names=["block1", "block2", "block3"])


def test_afs_table():
    losses = [torch.tensor([0.3, 0.1, 0.2]), torch.tensor([0.5, 0.4])]
    selected = select_channels(losses, [2, 1])
    df = afs_table(losses, selected, ["layer1", "layer2"])
    assert list(df.columns) == ["layer", "channel", "loss", "rank", "selected"]
    assert len(df) == 5
    l1 = df[df.layer == "layer1"]
    assert l1["rank"].tolist() == [2, 0, 1]
    assert l1["selected"].tolist() == [False, True, True]
    assert df[df.layer == "layer2"]["selected"].tolist() == [False, True]
