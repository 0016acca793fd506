"""synthesis.sia_augment, synthesis.self_augment and synthesis.shade reach the anomaly sources that train_realnet
draws, and only those: AFS scores the channels on the SIA as sampled."""

from __future__ import annotations

from stages import dag, training_data
from stages.common import execute
from stages.methods.realnet import select_features


def test_train_realnet_draws_augmented_own_and_shaded_sources_and_afs_plain_ones(tiny_cfg, pipeline_run,
                                                                                 train_realnet_on_a_copy, monkeypatch):
    opened: list[float] = []
    own: list[float] = []
    shaded: list[float] = []

    class Recording(training_data.StoredSIASource):
        def __init__(self, path: str, augment: float = 0.0) -> None:
            opened.append(augment)
            super().__init__(path, augment)

    real_with_own_images = training_data.with_own_images

    def recording_with_own_images(images, sources, share, generator):
        own.append(share)
        return real_with_own_images(images, sources, share, generator)

    real_with_shaded_images = training_data.with_shaded_images

    def recording_with_shaded_images(images, sources, share, generator):
        shaded.append(share)
        return real_with_shaded_images(images, sources, share, generator)

    monkeypatch.setattr(training_data, "StoredSIASource", Recording)
    monkeypatch.setattr(training_data, "with_shaded_images", recording_with_shaded_images)
    monkeypatch.setattr(training_data, "with_own_images", recording_with_own_images)
    synthesis = tiny_cfg.synthesis.model_copy(update={"sia_augment": 0.25, "self_augment": 0.5, "shade": 0.3})
    cfg = tiny_cfg.model_copy(update={"synthesis": synthesis})
    copy, _ = train_realnet_on_a_copy(cfg)
    assert opened == [0.25]
    assert own and set(own) == {0.5}  # every training step (and the preview) mixes in own images
    assert shaded and set(shaded) == {0.3}

    opened.clear()
    own.clear()
    shaded.clear()
    ups = {u: pipeline_run[1][u].ref for u in dag.upstream("select_features", cfg)}
    execute(select_features, cfg, copy, "demo", "brick", ups, force=True)
    assert opened == [0.0]
    assert set(own) <= {0.0}
    assert set(shaded) <= {0.0}
