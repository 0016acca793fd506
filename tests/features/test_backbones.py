"""Backbones: feature shapes, frozen/eval behaviour and weight loading without downloads."""

import pytest
import torch

from realnet_core.features.backbones import build_backbone

EXPECTED = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "wide_resnet50_2": [256, 512, 1024, 2048],
    "efficientnet_lite0": [24, 40, 112, 320],
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_channels_strides_frozen_eval(name, monkeypatch):
    # Random initialisation of a WideResNet50 takes seconds on a small CPU; values do not matter here.
    monkeypatch.setattr(torch.nn.init, "kaiming_normal_", lambda t, *a, **k: t)
    monkeypatch.setattr(torch.nn.init, "kaiming_uniform_", lambda t, *a, **k: t)
    weights = None if name == "efficientnet_lite0" else "random"
    bb = build_backbone(name, weights=weights)
    assert bb.channels == EXPECTED[name]
    assert bb.strides == [4, 8, 16, 32]
    assert not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.training and not any(m.training for m in bb.modules())
    with torch.no_grad():
        feats = bb(torch.rand(2, 3, 64, 64))
    assert [f.shape[1] for f in feats] == EXPECTED[name]
    assert [f.shape[-1] for f in feats] == [64 // s for s in bb.strides]


def test_normalisation_inside():
    bb = build_backbone("efficientnet_lite0")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        got = bb(x)[0]
        ref = bb.net.forward_blocks((x - 0.5) / 0.5, [2])[0]
    torch.testing.assert_close(got, ref)


def test_missing_weights_message(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("resnet34")
    msg = str(err.value)
    assert str(hub / "checkpoints" / "resnet34-b627a593.pth") in msg
    assert "weights=" in msg


def test_loads_cached_and_explicit_weights(tmp_path, monkeypatch):
    import torchvision

    ref = torchvision.models.resnet34(weights=None)
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), hub / "checkpoints" / "resnet34-b627a593.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    cached = build_backbone("resnet34")
    torch.testing.assert_close(cached.net.conv1.weight, ref.conv1.weight)
    explicit = build_backbone("resnet34", weights=str(hub / "checkpoints" / "resnet34-b627a593.pth"))
    torch.testing.assert_close(explicit.net.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        build_backbone("resnet34", weights=str(tmp_path / "nowhere.pth"))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="wide_resnet50_2"):
        build_backbone("vgg16")


def test_random_weights_are_the_same_on_every_build():
    # The stages rebuild the backbone for one artifact key several times; "random" must mean one backbone.
    torch.manual_seed(123)
    a = build_backbone("resnet34", weights="random")
    b = build_backbone("resnet34", weights="random")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_random_build_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    build_backbone("resnet34", weights="random")
    torch.testing.assert_close(torch.rand(3), expected)


def test_resnet18_never_downloads(tmp_path, monkeypatch):
    # PRN's encoder follows the same local-weights rules as the other ResNets: the message names the file.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"resnet18-[0-9a-f]+\.pth.*never downloads"):
        build_backbone("resnet18")
