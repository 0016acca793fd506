"""EfficientNet-Lite0 loads the packaged ImageNet weights and classifies a real photo correctly."""

import torch
import torch.nn.functional as F
from skimage.data import chelsea

from realnet_core.features.efficientnet_lite import INPUT_MEAN, INPUT_STD, efficientnet_lite0

EGYPTIAN_CAT = 285


def test_chelsea_is_an_egyptian_cat():
    model = efficientnet_lite0()  # strict=True load of the package's .pth
    x = torch.from_numpy(chelsea()).permute(2, 0, 1)[None].float() / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(INPUT_MEAN).view(1, 3, 1, 1)) / torch.tensor(INPUT_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p = model(x).softmax(dim=1)[0]
    assert int(p.argmax()) == EGYPTIAN_CAT
    assert float(p[EGYPTIAN_CAT]) > 0.5  # 0.79 with these weights


def test_block_layout():
    model = efficientnet_lite0()
    assert len(model._blocks) == 16
    assert [model.block_channels[i] for i in (2, 4, 10, 15)] == [24, 40, 112, 320]
    assert [model.block_strides[i] for i in (2, 4, 10, 15)] == [4, 8, 16, 32]
