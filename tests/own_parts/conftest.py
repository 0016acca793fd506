"""A user's own parts, run end to end once per session: plain folders with masks, an MVTec-style tree with
its own category name and no masks, and 20 normal images alone (tests/own_parts/_parts.py builds them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from own_parts._parts import TINY, TREE_NAME, build_parts, plain_overrides


@pytest.fixture(scope="session")
def parts(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("parts")
    return {
        "plain": build_parts(base / "plain", n_normal=20, n_abnormal=6),
        "tree": build_parts(base / "tree", n_normal=20, n_abnormal=6, masks=False, layout="tree", name=TREE_NAME),
        "normal_only": build_parts(base / "normal_only", n_normal=20, n_abnormal=0),
    }


@pytest.fixture(scope="session")
def parts_store(parts, tmp_path_factory) -> dict:
    """The three runs in one artifact root: ``{"root": ..., "summaries": {name: run summary}}``."""
    from flows.cli import main
    from flows.runner import run_pipeline

    root = tmp_path_factory.mktemp("parts_artifacts")
    summaries = {}
    for name in ("plain", "normal_only"):
        summaries[name] = run_pipeline(
            categories=[name], dataset="folder", overrides=[*TINY, *plain_overrides(parts[name], name)],
            artifacts=str(root), use_prefect=False)
    # The command others rely on, exactly: --dataset folder --data-root ROOT --category NAME.
    code = main(["run", "--dataset", "folder", "--data-root", str(parts["tree"]), "--category", TREE_NAME,
                 "--no-prefect", "--artifacts", str(root), *[a for s in TINY for a in ("--set", s)]])
    assert code == 0
    return {"root": root, "summaries": summaries}
