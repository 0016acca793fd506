"""SimpleNet's config section: the code's defaults, its profiles, and bad values named by key."""

from __future__ import annotations

import pytest

from realnet_core.config import ConfigError, load_config
from stages import methods
from stages.methods.simplenet.train_simplenet import build_model, image_size


def test_the_paper_profile_keeps_the_codes_settings():
    cfg = load_config("paper", ["method=simplenet"])
    s = cfg.simplenet
    assert (cfg.backbone.name, s.layers, s.epochs, s.batch_size, image_size(cfg)) == ("wide_resnet50_2", [2, 3],
                                                                                       160, 8, 288)
    assert (s.noise_std, s.margin, s.dsc_lr, s.adaptor_lr, s.dsc_hidden) == (0.015, 0.5, 2e-4, 1e-4, 1024)
    net = build_model(cfg)
    assert net.channels == [512, 1024] and net.adaptor.fc.bias is not None  # the code's adaptor has a bias
    assert sum(p.numel() for p in net.parameters()) == 1536 * 1537 + 1536 * 1024 + 1024 + 2 * 1024 + 1024


def test_the_demo_profile_uses_its_images_size_and_lite0s_layers():
    cfg = load_config("demo", ["method=simplenet"])
    assert image_size(cfg) == cfg.data.image_size == 128
    assert build_model(cfg).channels == [40, 112]


@pytest.mark.parametrize("override, message", [
    ("simplenet.layers=[3,2]", "simplenet.layers"),
    ("simplenet.layers=[5]", "simplenet.layers"),
    ("simplenet.patch_size=4", "simplenet.patch_size=4"),
    ("simplenet.noise_std=0", "simplenet.noise_std=0"),
    ("simplenet.margn=0.5", "simplenet.margn: unknown key"),
])
def test_a_bad_value_is_named_by_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("demo", ["method=simplenet", override])


def test_simplenet_ships_its_table_1():
    paper = methods.paper_results("simplenet")
    assert len(paper) == 15 and set(paper.dataset) == {"mvtec"}
    assert paper.image_auroc.mean() == pytest.approx(99.6, abs=0.05)  # Table 1's average
    assert paper.pixel_auroc.mean() == pytest.approx(98.1, abs=0.05)


def test_the_bench_asks_the_registry_for_simplenets_parts():
    from flows.bench.run import METRICS, PARTS

    assert {"simplenet_train", "simplenet_inference"} <= set(PARTS)
    assert METRICS["simplenet_train"] == ("simplenet_train_steps_per_s",)
