"""train_realnet's feature cache: the same features as a full backbone pass, from a pass over the anomalous rows."""

import torch

from realnet_core.config import load_config
from realnet_core.features.backbones import build_backbone
from stages.methods.realnet.train_realnet import normal_features
from stages.training_data import NormalFeatures, TrainingData, paired_features, synth_kwargs

CPU = torch.device("cpu")


class CountingBackbone(torch.nn.Module):
    """The real backbone, counting the images it is given."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone, self.images = backbone, 0

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.images += len(x)
        return self.backbone(x)


def _setup(size: int = 64):
    torch.manual_seed(0)
    cfg = load_config("demo", [f"data.image_size={size}", "diffusion.image_size=16"])
    backbone = build_backbone("efficientnet_lite0", "random").eval()
    data = TrainingData.random(cfg, CPU, n_images=6)
    return cfg, backbone, data


def test_cached_pairs_equal_a_full_backbone_pass_and_spare_the_normal_rows():
    cfg, backbone, data = _setup()
    counting = CountingBackbone(backbone)
    cache = NormalFeatures(counting, data.images, CPU, bf16=False, batch_size=4)
    assert counting.images == 6  # each training image once
    gen = torch.Generator().manual_seed(3)
    idx, normal, aug, mask = data.indexed_batch(8, gen, 0.5, synth_kwargs(cfg))
    anomalous = int((mask.flatten(1).amax(1) > 0).sum())
    assert 0 < anomalous < 8  # the seed gives both kinds of rows
    counting.images = 0
    feats_a, feats_n = cache.pair(counting, idx, aug, mask, CPU, bf16=False)
    assert counting.images == anomalous  # the backbone saw the anomalous rows only
    full_a, full_n = paired_features(backbone, aug, normal, CPU, bf16=False)
    for got, want in zip([*feats_a, *feats_n], [*full_a, *full_n], strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_cache_over_its_limit_is_not_built():
    _, backbone, data = _setup(size=128)
    need = NormalFeatures.nbytes(backbone, data.images)
    assert need == 6 * sum(f[0].numel() * 4 for f in backbone(data.images[:1]))
    assert 2**20 < need < 2 * 2**20  # six 128 px images of Lite0 features: 1.1 MB
    for mb, built in ((2, True), (1, False), (0, False)):
        cfg = load_config("demo", ["diffusion.image_size=16", f"train.feature_cache_mb={mb}"])
        assert (normal_features(backbone, backbone, data, cfg, CPU) is not None) == built, mb
