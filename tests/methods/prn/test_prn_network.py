"""PRN's network: fusion, multi-size attention and decoder shapes at every scale, the prototype residual."""

import pytest
import torch

from realnet_core.methods.prn import PRN, MultiScaleFusion, MultiSizeAttention, SegmentationDecoder
from realnet_core.methods.prn.network import patch_sizes
from realnet_core.methods.prn.prototypes import fit_prototypes, nearest_prototype, prototype_residual

CHANNELS, SIZES = [8, 16, 32], [16, 8, 4]  # a 64 px image at strides 4, 8, 16


def _maps(channels, b=2):
    return [torch.randn(b, c, s, s) for c, s in zip(channels, SIZES, strict=True)]


def test_fusion_keeps_every_scale_shape_and_mixes_all_scales():
    fusion = MultiScaleFusion(CHANNELS).eval()
    maps = _maps(CHANNELS)
    out = fusion(maps)
    assert [tuple(o.shape) for o in out] == [tuple(m.shape) for m in maps]
    # Eq. 2: every output depends on every input scale (identity from its own, transforms from the others).
    for r in range(3):
        changed = [m.clone() for m in maps]
        changed[r] = changed[r] + 1.0
        assert all(not torch.allclose(a, b) for a, b in zip(fusion(changed), out, strict=True))


def test_fusion_downsamples_with_the_papers_depthwise_separable_convolution():
    fusion = MultiScaleFusion(CHANNELS)
    depthwise = fusion.paths[2][0][0]  # from scale 1 to scale 3: stride 4, kernel 5, padding 2, one group per channel
    assert (depthwise.stride, depthwise.kernel_size, depthwise.padding) == ((4, 4), (5, 5), (2, 2))
    assert depthwise.groups == CHANNELS[0]


def test_patch_sizes_halve_from_the_whole_map():
    assert patch_sizes(64) == [64, 32, 16, 8]
    assert patch_sizes(16) == [16, 8, 4, 2]
    assert patch_sizes(4) == [4, 2, 1, 1]
    assert patch_sizes(14) == [14, 7, 2, 1]  # divisors of the side, so that patches tile it


@pytest.mark.parametrize("scale", range(3))
def test_attention_keeps_the_shape_at_every_scale(scale):
    c, s = 2 * CHANNELS[scale], SIZES[scale]
    msa = MultiSizeAttention(c, s).eval()
    x = torch.randn(2, c, s, s)
    assert msa(x).shape == x.shape


def test_attention_tokens_are_whole_patches():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    tokens = MultiSizeAttention._tokens(x, 2)
    assert tokens.shape == (2, 4, 3 * 2 * 2)
    assert torch.equal(tokens[0, 1], x[0, :, 0:2, 2:4].reshape(-1))  # the top-right patch, all channels
    assert torch.equal(MultiSizeAttention._untokens(tokens, x.shape, 2), x)


def test_decoder_gives_one_channel_at_the_input_size():
    skips = _maps([2 * c for c in CHANNELS])
    assert SegmentationDecoder([2 * c for c in CHANNELS]).eval()(skips, (64, 64)).shape == (2, 1, 64, 64)


def test_prn_maps_three_scales_to_logits_and_holds_its_prototypes():
    net = PRN(CHANNELS, SIZES, [3, 2, 1], msa_layers=2).eval()
    protos = [torch.randn(k, c, s, s) for k, c, s in zip([3, 2, 1], CHANNELS, SIZES, strict=True)]
    net.set_prototypes(protos)
    assert net(_maps(CHANNELS), (64, 64)).shape == (2, 1, 64, 64)
    again = PRN.from_config(net.config())
    again.load_state_dict(net.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.prototypes(), protos, strict=True))
    with pytest.raises(ValueError, match="prototypes of shape"):
        net.set_prototypes([p[:1] for p in protos[:2]] + [protos[2][:, :1]])


def test_residual_takes_the_nearest_prototype_over_the_whole_map():
    protos = torch.stack([torch.zeros(2, 3, 3), torch.full((2, 3, 3), 5.0), torch.full((2, 3, 3), -4.0)])
    feats = torch.stack([torch.full((2, 3, 3), 4.0), torch.full((2, 3, 3), -1.0), torch.full((2, 3, 3), -3.0)])
    assert nearest_prototype(feats, protos).tolist() == [1, 0, 2]
    d = prototype_residual(feats, protos)
    assert torch.allclose(d, torch.stack([torch.full((2, 3, 3), v) for v in (1.0, 1.0, 1.0)]))
    # One position far off does not decide: the distance is over the whole map.
    f = torch.zeros(1, 2, 3, 3)
    f[0, 0, 0, 0] = 4.9
    assert nearest_prototype(f, protos).item() == 0


def test_kmeans_prototypes_repeat_for_a_seed():
    feats = torch.randn(20, 4, 3, 3).numpy()
    a, la = fit_prototypes(feats, 3, seed=7)
    b, lb = fit_prototypes(feats, 3, seed=7)
    assert a.shape == (3, 4, 3, 3) and (a == b).all() and (la == lb).all()
    with pytest.raises(ValueError, match="k=21"):
        fit_prototypes(feats, 21, seed=0)
