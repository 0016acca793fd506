"""The channel table that the pre-run checks use matches the backbones as built."""

import pytest

from realnet_core.features.backbones import BACKBONES, backbone_channels, build_backbone


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_channels_match_the_built_backbone(name):
    assert list(backbone_channels(name)) == build_backbone(name, "random").channels
