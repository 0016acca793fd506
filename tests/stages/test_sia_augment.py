"""synthesis.sia_augment reaches the SIA that train_realnet draws, and only those: AFS scores the channels on
the SIA as sampled."""

from __future__ import annotations

from stages import dag, training_data
from stages.common import execute
from stages.methods.realnet import select_features


def test_train_realnet_draws_augmented_sia_and_afs_plain_ones(tiny_cfg, pipeline_run, train_realnet_on_a_copy,
                                                              monkeypatch):
    opened: list[float] = []

    class Recording(training_data.StoredSIASource):
        def __init__(self, path: str, augment: float = 0.0) -> None:
            opened.append(augment)
            super().__init__(path, augment)

    monkeypatch.setattr(training_data, "StoredSIASource", Recording)
    cfg = tiny_cfg.model_copy(update={"synthesis": tiny_cfg.synthesis.model_copy(update={"sia_augment": 0.25})})
    copy, _ = train_realnet_on_a_copy(cfg)
    assert opened == [0.25]

    opened.clear()
    ups = {u: pipeline_run[1][u].ref for u in dag.upstream("select_features", cfg)}
    execute(select_features, cfg, copy, "demo", "brick", ups, force=True)
    assert opened == [0.0]
