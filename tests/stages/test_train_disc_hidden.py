"""train.disc_hidden and train.disc_min_width: the widths train_realnet builds its discriminator at are the ones
its saved detector reloads with; and a discriminator that gives one value everywhere is refused, not saved."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from realnet_core.features.backbones import build_backbone
from realnet_core.methods.realnet.discriminator import tail_widths
from stages.methods.realnet import train_realnet
from stages.methods.realnet.detector import load_bundle
from stages.training_data import TrainingData, synth_kwargs

WIDTH = 16  # the later convs narrow to 4, 1 and 0 before the floor


def _conv_widths(net: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in net.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize(("floor", "tail"), [(4, [4, 4, 4]), (2, [4, 2, 2])])
def test_the_saved_detector_reloads_with_the_configured_discriminator_widths(tiny_cfg, train_realnet_on_a_copy,
                                                                            with_train, floor, tail):
    cfg = with_train(tiny_cfg, disc_hidden=WIDTH, disc_min_width=floor)
    _, result = train_realnet_on_a_copy(cfg, f"floor{floor}")
    _, net, _ = load_bundle(Path(result.ref.path), torch.device("cpu"))
    assert net.discriminator.hidden == WIDTH
    assert _conv_widths(net)[-5:] == [WIDTH, *tail, 2]
    assert train_realnet.key_config(cfg)["train"]["disc_hidden"] == WIDTH


def test_the_floor_keeps_the_authors_tail_at_their_width():
    assert tail_widths(128) == tail_widths(128, 4) == (32, 8, 4)
    assert tail_widths(64) == (16, 4, 2) and tail_widths(64, 4) == (16, 4, 4)


def test_a_discriminator_with_a_flat_map_is_refused_with_a_message_naming_the_category(tiny_cfg):
    cfg, dev = tiny_cfg, torch.device("cpu")
    backbone = build_backbone(cfg.backbone.name, cfg.backbone.weights).eval()
    selected = [torch.arange(c // 2) for c in backbone.channels]
    net = train_realnet.build_model(cfg, list(backbone.channels), selected)
    data = TrainingData.random(cfg, dev, n_images=4)
    ctx = SimpleNamespace(cfg=cfg, device=dev, dataset="demo", category="brick")
    train_realnet._check_not_collapsed(ctx, net, backbone, data, synth_kwargs(cfg))  # a fresh one varies
    last_relu_layer = net.discriminator.head[0]  # every unit dead: what training left on a collapsed run
    with torch.no_grad():
        last_relu_layer.weight.zero_()
        last_relu_layer.bias.fill_(-1.0)
    with pytest.raises(train_realnet.DiscriminatorCollapsed, match=r"demo/brick.*the same map.*train\.seed"):
        train_realnet._check_not_collapsed(ctx, net, backbone, data, synth_kwargs(cfg))
