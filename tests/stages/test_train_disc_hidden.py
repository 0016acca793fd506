"""train.disc_hidden: the width train_realnet builds its discriminator at is the one its saved detector
reloads with."""

from __future__ import annotations

from pathlib import Path

import torch

from stages.methods.realnet import train_realnet
from stages.methods.realnet.detector import load_bundle

WIDTH = 16  # the later convs narrow to 4, 2 and 2


def test_the_saved_detector_reloads_with_the_configured_discriminator_width(tiny_cfg, train_realnet_on_a_copy,
                                                                           with_train):
    cfg = with_train(tiny_cfg, disc_hidden=WIDTH)
    _, result = train_realnet_on_a_copy(cfg)
    _, net, _ = load_bundle(Path(result.ref.path), torch.device("cpu"))
    assert net.discriminator.hidden == WIDTH
    widths = [m.out_channels for m in net.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[-5:] == [WIDTH, 4, 2, 2, 2]
    assert train_realnet.key_config(cfg)["train"]["disc_hidden"] == WIDTH
