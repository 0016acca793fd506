"""A tiny pipeline on the demo data, run once per session as plain stage functions (no Prefect)."""

from __future__ import annotations

import pytest

from realnet_core.config import load_config
from realnet_core.data.demo import build_demo_dataset

TINY = [
    "diffusion.steps=6", "diffusion.checkpoint_every=3", "diffusion.num_channels=32",
    "sia.num_images=10", "sia.batch_size=4", "sia.shard_images=4", "sia.sampling_steps=2",
    "afs.batches=2", "afs.batch_size=4", "train.epochs=2", "train.steps_per_epoch=2", "train.batch_size=4",
    "data.image_size=64", "evaluate.overlays=4", "runtime.progress=false",
    "afs.dims=[16,24,48,96]",  # fewer than each layer has; 2+ values per norm group at 64 px
]


@pytest.fixture(scope="session")
def stage_data(tmp_path_factory):
    return build_demo_dataset(tmp_path_factory.mktemp("demo") / "demo_data", size=64, n_train=8, n_test_good=4,
                              n_test_bad=6)


@pytest.fixture(scope="session")
def tiny_cfg(stage_data):
    return load_config("demo", [*TINY, f"data.roots.demo={stage_data}"])


@pytest.fixture(scope="session")
def pipeline_run(tiny_cfg, tmp_path_factory):
    """Every stage of demo/brick, executed in order through stages.common.execute."""
    from stages import dag
    from stages.common import execute
    from storage.store import Store

    store = Store(str(tmp_path_factory.mktemp("artifacts")))
    results = {}
    for stage in dag.active(tiny_cfg):
        ups = {u: results[u].ref for u in dag.upstream(stage, tiny_cfg)}
        results[stage] = execute(dag.MODULES[stage], tiny_cfg, store, "demo", "brick", ups)
    return store, results


def _copy_of(store, root):
    """A Store over a copy of ``store``'s files at ``root``."""
    import shutil

    from storage.store import Store

    shutil.copytree(store.root, root)
    return Store(str(root))


@pytest.fixture
def rerun_on_a_copy(pipeline_run, tmp_path):
    """``rerun(cfg, redo)``: every stage again with ``cfg`` on a copy of the session store, the ``redo``
    stages forced and the others reused; returns the new StageResults by stage."""
    from stages import dag
    from stages.common import execute

    def rerun(cfg, redo: set[str]) -> dict:
        copy, results = _copy_of(pipeline_run[0], tmp_path / "artifacts"), {}
        for stage in dag.active(cfg):
            ups = {u: results[u].ref for u in dag.upstream(stage, cfg)}
            results[stage] = execute(dag.MODULES[stage], cfg, copy, "demo", "brick", ups, force=stage in redo)
        return results

    return rerun


@pytest.fixture
def train_realnet_on_a_copy(pipeline_run, tmp_path):
    """``train(cfg, name)``: train_realnet alone with ``cfg`` on a copy of the session store named ``name``, built
    afresh in the first call for that copy (the session store may hold an artifact of the same key); returns
    (the copy's Store, the StageResult)."""
    from stages import dag
    from stages.common import execute
    from stages.methods.realnet import train_realnet
    from storage.store import Store

    store, results = pipeline_run

    def train(cfg, name: str = "copy"):
        root, fresh = tmp_path / name, not (tmp_path / name).exists()
        copy = _copy_of(store, root) if fresh else Store(str(root))
        ups = {u: results[u].ref for u in dag.upstream("train_realnet", cfg)}
        return copy, execute(train_realnet, cfg, copy, "demo", "brick", ups, force=fresh)

    return train


@pytest.fixture
def with_train():
    """``with_train(cfg, **train)``: ``cfg`` with those train settings replaced."""
    return lambda cfg, **train: cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
