"""PRN's config section and data.seen_anomalies: the paper's defaults, and bad values named by key."""

import pytest

from realnet_core.config import ConfigError, load_config


def test_the_prn_profile_holds_the_papers_settings():
    cfg = load_config("prn")
    assert cfg.method == "prn" and cfg.backbone.name == "resnet18" and cfg.data.seen_anomalies == 10
    p = cfg.prn
    assert (p.prototype_ratio, p.kmeans_max_iter, p.heads, p.msa_layers) == (0.1, 300, 4, 3)
    assert (p.epochs, p.batch_size, p.lr, p.weight_decay) == (700, 64, 1e-4, 1e-5)
    assert (p.focal_weight, p.focal_alpha, p.focal_gamma, p.top_k) == (5.0, 0.5, 4.0, 100)
    assert load_config("demo").data.seen_anomalies == 0  # the default: simulated anomalies only


@pytest.mark.parametrize("override, key", [
    ("prn.beta=[0.9,0.1]", "prn.beta"), ("data.seen_anomalies=-1", "data.seen_anomalies"),
    ("prn.batch_size=2", "prn.batch_size"), ("prn.topk=5", "prn.topk")])
def test_bad_prn_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("demo", [override])
