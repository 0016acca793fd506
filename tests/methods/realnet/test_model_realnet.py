"""RealNet head: shapes, losses, a tiny overfitting run, checkpoint round trip, image scores."""

import json

import pytest
import torch

from realnet_core.methods.realnet import Discriminator, RealNet, ReconUNet
from realnet_core.metrics import image_scores

CHANNELS = [6, 8, 8, 10]
SIZES = [16, 8, 4, 2]  # strides 4, 8, 16, 32 of a 64x64 image
IMAGE = (64, 64)
RECON = {"num_res_blocks": 1, "channel_mult": (1, 2), "attention_levels": (1,)}


def _selected() -> list[torch.Tensor]:
    return [
        torch.tensor([0, 2, 3, 5]),
        torch.tensor([1, 4, 6, 7]),
        torch.tensor([0, 7]),
        torch.tensor([9, 3, 5]),
    ]


def _model(**kw) -> RealNet:
    torch.manual_seed(0)
    return RealNet(CHANNELS, _selected(), recon_kwargs=RECON, disc_hidden=8, **kw)


def _feats(b: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, s, s, generator=g) for c, s in zip(CHANNELS, SIZES, strict=True)]


def _synthetic_batch(b: int, seed: int) -> tuple[list, list, torch.Tensor]:
    """Normal features are a fixed pattern plus a little noise; anomalous ones add a constant to
    every channel inside a random square (the 'defect') on half the images."""
    g = torch.Generator().manual_seed(seed)
    base = _feats(1, seed=123)
    normal = [x.expand(b, -1, -1, -1) + 0.05 * torch.randn(b, *x.shape[1:], generator=g) for x in base]
    masks = torch.zeros(b, 1, *IMAGE)
    for i in range(b // 2):
        y0, x0 = torch.randint(0, 32, (2,), generator=g).tolist()
        masks[i, :, y0 : y0 + 32, x0 : x0 + 32] = 1.0
    aug = []
    for x, s in zip(normal, SIZES, strict=True):
        m = torch.nn.functional.interpolate(masks, size=(s, s), mode="area")
        aug.append(x + 3.0 * m)
    return aug, normal, masks


def test_forward_shapes_and_loss() -> None:
    net = _model()
    aug, normal = _feats(2, 1), _feats(2, 2)
    out = net(aug, normal, out_size=IMAGE)
    assert [r.shape for r in out["recon"]] == [(2, 4, 16, 16), (2, 4, 8, 8), (2, 2, 4, 4), (2, 3, 2, 2)]
    assert out["logits"].shape == (2, 2, *IMAGE)
    assert out["anomaly_map"].shape == (2, *IMAGE)
    assert ((out["anomaly_map"] >= 0) & (out["anomaly_map"] <= 1)).all()
    # r = 2 * round(13 / 3 / 2) = 4 channels chosen per image.
    assert out["rrs_indices"].shape == (2, 4)
    # The recon nets start at zero, so L_recon = sum_k mean(target_k^2).
    expected = sum((n.index_select(1, s) ** 2).mean() for n, s in zip(normal, _selected(), strict=True))
    torch.testing.assert_close(out["recon_loss"], expected)

    masks = torch.zeros(2, 1, *IMAGE)
    masks[0, :, 10:30, 10:30] = 1
    losses = net.loss(out, masks)
    assert set(losses) == {"total", "recon", "seg"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    torch.testing.assert_close(losses["total"], losses["recon"] + losses["seg"])
    losses["total"].backward()
    assert all(p.grad is not None for p in net.recon[0].parameters())


def test_inference_without_normal_features_and_default_size() -> None:
    net = _model().eval()
    with torch.no_grad():
        out = net(_feats(3))
    assert out["recon_loss"].item() == 0.0
    assert out["logits"].shape == (3, 2, 32, 32)  # twice the stride-4 resolution when no out_size
    # Masks at image size are resized to the logits.
    assert torch.isfinite(net.loss(out, torch.zeros(3, 1, *IMAGE))["seg"])


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        RealNet(CHANNELS, [torch.tensor([0, 6])] + _selected()[1:])  # index out of range
    with pytest.raises(ValueError):
        RealNet(CHANNELS, [torch.tensor([1, 1])] + _selected()[1:])  # duplicate
    net = _model()
    with pytest.raises(ValueError):
        net(_feats(1)[:3])


def test_overfits_tiny_synthetic_problem() -> None:
    torch.manual_seed(0)
    net = _model()
    # A high learning rate so that 40 steps suffice (training itself uses 1e-4 for many epochs).
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = last = None
    for step in range(40):
        aug, normal, masks = _synthetic_batch(4, seed=step)
        losses = net.loss(net(aug, normal, out_size=IMAGE), masks)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        if first is None:
            first = {k: v.item() for k, v in losses.items()}
        last = {k: v.item() for k, v in losses.items()}
    assert last["seg"] < 0.5 * first["seg"]  # about 0.62 -> 0.19
    assert last["recon"] < first["recon"]

    net.eval()
    aug, _, masks = _synthetic_batch(4, seed=999)
    with torch.no_grad():
        amap = net(aug, out_size=IMAGE)["anomaly_map"]
    inside = amap[masks[:, 0] > 0.5].mean()
    outside = amap[masks[:, 0] < 0.5].mean()
    assert inside > outside + 0.3
    scores = image_scores(amap)
    assert scores[:2].min() > scores[2:].max()  # anomalous images (first half) score higher


def test_state_dict_round_trip_via_config() -> None:
    net = _model()
    # Move BN running stats away from their defaults so the round trip checks them too.
    net.train()
    net(_feats(2, 5), out_size=IMAGE)
    cfg = json.loads(json.dumps(net.config()))
    clone = RealNet.from_config(cfg)
    clone.load_state_dict(net.state_dict(), strict=True)
    assert "selected_0" in net.state_dict()
    for a, b in zip(clone.selected, net.selected, strict=True):
        assert torch.equal(a, b)
    net.eval()
    clone.eval()
    x = _feats(2, 7)
    with torch.no_grad():
        torch.testing.assert_close(clone(x, out_size=IMAGE)["logits"], net(x, out_size=IMAGE)["logits"])


def test_image_scores_hand_made() -> None:
    amap = torch.zeros(3, 32, 32)
    amap[0, 5:21, 5:21] = 1.0  # a 16x16 block: some window is fully inside -> 1.0
    amap[1, 0, 0] = 1.0  # a single hot pixel: averaged down to 1/256
    amap[2] = 0.25
    scores = image_scores(amap)
    torch.testing.assert_close(scores, torch.tensor([1.0, 1 / 256, 0.25]))
    pixel_max = image_scores(amap.unsqueeze(1), pool=1)
    torch.testing.assert_close(pixel_max, torch.tensor([1.0, 1.0, 0.25]))
    # Maps smaller than the kernel: pooled over the whole map.
    torch.testing.assert_close(image_scores(torch.ones(2, 4, 4) * 0.5), torch.tensor([0.5, 0.5]))
    # A map narrower than the kernel: a square kernel of its shorter side, as evaluate has always pooled.
    wide = torch.zeros(1, 4, 8)
    wide[0, :, :4] = 1.0
    torch.testing.assert_close(image_scores(wide), torch.tensor([1.0]))


@pytest.mark.parametrize(("dims", "paper_gib"), [((256, 512, 512, 256), 2.2), ((128, 256, 256, 128), 0.74)])
def test_paper_model_size_matches_table_s4(dims: tuple[int, ...], paper_gib: float) -> None:
    """With WideResNet50 the float32 model is 2.2 GB for m = {256, 512, 512, 256} and 0.74 GB for
    half those widths (paper, Table S4); the sizes come out in GiB, to the second decimal."""
    from torchvision.models import wide_resnet50_2

    with torch.device("meta"):  # counts parameters without allocating 2 GB
        backbone = wide_resnet50_2()
        # RealNet's own parts (its constructor validates indices, which meta tensors cannot do).
        head = torch.nn.ModuleList([*(ReconUNet(m) for m in dims), Discriminator(sum(dims) // 3)])
    params = sum(p.numel() for m in (backbone, head) for p in m.parameters())
    assert params * 4 / 2**30 == pytest.approx(paper_gib, abs=0.01)


def test_rrs_input_survives_the_config_round_trip() -> None:
    net = RealNet([4, 6], [[0, 1], [2, 3, 4]], rrs_input="paired")
    again = RealNet.from_config(net.config())
    assert again.rrs_input == again.rrs.output == "paired"
    bare = {k: v for k, v in net.config().items() if k != "rrs_input"}
    assert RealNet.from_config(bare).rrs.output == "raw"
    assert RealNet.from_config({**bare, "rrs_normed": True}).rrs.output == "normed"  # saved before "paired"


def test_the_discriminator_floor_and_leak_survive_the_config_round_trip_and_old_files_keep_theirs() -> None:
    net = RealNet([4, 6], [[0, 1], [2, 3, 4]], disc_hidden=64, disc_min_width=4, disc_leak=0.01)
    again = RealNet.from_config(net.config())
    assert again.discriminator.head[0].out_channels == 4
    act = again.discriminator.head[1]
    assert isinstance(act, torch.nn.LeakyReLU) and act.negative_slope == 0.01
    saved_before = {k: v for k, v in net.config().items() if k not in ("disc_min_width", "disc_leak")}
    old = RealNet.from_config(saved_before).discriminator
    assert old.head[0].out_channels == 2 and isinstance(old.head[1], torch.nn.ReLU)  # 64 // 32, the authors' ReLU


def test_paired_input_is_mapped_onto_the_discriminators_width_r() -> None:
    # 2r channels in, one bias-free 1x1 convolution, then the residual units at r as for raw input.
    raw = RealNet([4, 6], [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5]])
    paired = RealNet([4, 6], [[0, 1, 2, 3], [0, 1, 2, 3, 4, 5]], rrs_input="paired")
    r = raw.rrs.out_channels
    entry = paired.discriminator.body[0]
    assert isinstance(entry, torch.nn.Conv2d) and (entry.in_channels, entry.out_channels) == (2 * r, r)
    assert entry.kernel_size == (1, 1) and entry.bias is None
    assert [m.shape for m in paired.discriminator.body[1:].parameters()] == [
        m.shape for m in raw.discriminator.body.parameters()]
    feats = [torch.rand(2, 4, 8, 8), torch.rand(2, 6, 4, 4)]
    for net in (raw, paired):
        assert net.eval()(feats, out_size=(16, 16))["logits"].shape == (2, 2, 16, 16)
