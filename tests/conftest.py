"""Fixtures shared by every test folder: the demo dataset and a tiny, fast pipeline config."""

from __future__ import annotations

from pathlib import Path

import pytest

# The whole pipeline on the demo data in well under a minute of CPU time: every stage still runs
# its real code, on fewer, smaller images and a handful of optimisation steps.
TINY = [
    "diffusion.steps=4",
    "diffusion.checkpoint_every=2",
    "diffusion.batch_size=4",
    "diffusion.sample_steps=2",
    "sia.num_images=8",
    "sia.batch_size=8",
    "sia.shard_images=4",
    "sia.sampling_steps=2",
    "afs.dims=[8,8,8,8]",
    "afs.batches=2",
    "afs.batch_size=4",
    "train.epochs=2",
    "train.steps_per_epoch=2",
    "train.batch_size=4",
    "train.recon_res_blocks=1",
    "data.image_size=64",
    "evaluate.overlays=2",
    "runtime.progress=false",
    # Two of the 8 training images set the threshold: with afs.dims 8 the model's deepest level is 1 x 1 at
    # 64 px, where GroupNorm needs two values per group, so a batch of one image cannot be scored.
    "data.val_fraction=0.25",
]


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: two trees are equal if and only if these are."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True, scope="session")
def _private_device_locks(tmp_path_factory: pytest.TempPathFactory):
    """GPU lock files of this test session, apart from those of real runs on the same machine."""
    import os

    old = os.environ.get("REALNET_DEVICE_LOCK_DIR")
    os.environ["REALNET_DEVICE_LOCK_DIR"] = str(tmp_path_factory.mktemp("device_locks"))
    yield
    if old is None:
        os.environ.pop("REALNET_DEVICE_LOCK_DIR", None)
    else:
        os.environ["REALNET_DEVICE_LOCK_DIR"] = old


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset (categories brick and grass), built once per test session, small images."""
    from realnet_core.data.demo import build_demo_dataset

    return Path(build_demo_dataset(tmp_path_factory.mktemp("demo_data") / "demo", size=64, n_train=8,
                                   n_test_good=4, n_test_bad=4))


@pytest.fixture(scope="session")
def tiny_overrides(demo_root: Path) -> list[str]:
    """``--set`` strings for a fast demo-profile run against ``demo_root``."""
    return [*TINY, f"data.roots.demo={demo_root}"]
