"""Fixtures of the reliability tests: a small demo dataset, child ``realnet`` runs, a baseline run.

``baseline`` is one complete run of the fast config (``_helpers.FAST``), built once per session;
tests that need finished upstream artifacts work on a copy of it (``artifacts``) and change one
stage's config, so that only that stage and the stages downstream of it run again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from reliability._helpers import STAGES, Realnet, complete, run_args


@pytest.fixture(scope="session")
def realnet(tmp_path_factory: pytest.TempPathFactory) -> Realnet:
    return Realnet(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset (brick and grass) at 64 px with few images, built once per session."""
    from realnet_core.data.demo import build_demo_dataset

    return Path(build_demo_dataset(tmp_path_factory.mktemp("rel_data") / "demo", size=64, n_train=8,
                                   n_test_good=4, n_test_bad=4))


@pytest.fixture
def data_copy(demo_data: Path, tmp_path: Path) -> Path:
    """A private copy of the demo dataset that the test may damage."""
    return Path(shutil.copytree(demo_data, tmp_path / "data"))


@pytest.fixture(scope="session")
def baseline(realnet: Realnet, demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An artifact root holding one complete FAST run of demo/brick."""
    root = tmp_path_factory.mktemp("baseline") / "artifacts"
    child = realnet(run_args(root, demo_data))
    assert child.rc == 0, child.stderr
    assert [len(complete(root, s)) for s in STAGES] == [1] * len(STAGES)
    return root


@pytest.fixture
def artifacts(baseline: Path, tmp_path: Path) -> Path:
    """A private copy of the baseline artifact root."""
    return Path(shutil.copytree(baseline, tmp_path / "artifacts"))
