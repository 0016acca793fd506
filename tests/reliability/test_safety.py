"""Safety: names cannot escape the artifact root, checkpoints never unpickle code.

The third safety requirement (the compose file publishes no database port and reads passwords
from the environment) is covered by ``tests/test_compose.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from reliability._helpers import manifests, one_line_error, run_args, sets

from storage.checkpoints import CheckpointError, load_checkpoint
from storage.store import ArtifactRef, Store


def _everything(path: Path) -> set[Path]:
    return set(path.rglob("*"))


@pytest.mark.parametrize("flag, value, expected", [
    ("--category", "../x", "unsafe category name '../x'"),
    ("--category", "demo/../../x", "unsafe category name '../../x'"),
    ("--category", ".hidden", "unsafe category name '.hidden'"),
    ("--dataset", "..", "unsafe dataset name '..'"),
])
def test_names_cannot_escape_the_artifact_root_cli(realnet, demo_data, tmp_path, flag, value, expected):
    root = tmp_path / "deep" / "artifacts"
    args = run_args(root, demo_data)
    args[args.index(flag) + 1] = value
    if flag == "--dataset":  # without --data-root: see the xfail test below
        i = args.index("--data-root")
        del args[i: i + 2]
    before = _everything(tmp_path)
    child = realnet(args)
    assert expected in one_line_error(child)
    assert _everything(tmp_path) == before  # nothing written anywhere, inside the root or out of it
    assert manifests(tmp_path) == []


def test_unsafe_dataset_with_data_root_is_named(realnet, demo_data, tmp_path):
    args = run_args(tmp_path / "artifacts", demo_data)
    args[args.index("--dataset") + 1] = ".."
    assert "unsafe dataset name '..'" in one_line_error(realnet(args))
    assert manifests(tmp_path) == []


def test_names_cannot_escape_the_artifact_root_store(tmp_path):
    store = Store(str(tmp_path / "artifacts"))
    for stage, dataset, category, key in [
        ("s", "..", "c", "k"), ("s", "d", "../x", "k"), ("s", "d", "c", "../../k"), ("s", "d", "c", ".hidden"),
        ("../s", "d", "c", "k"), ("s", "d/e", "c", "k"), ("s", "d", "c", "/abs"),
    ]:
        with pytest.raises(ValueError, match="invalid .* name"):
            store.ref(stage, dataset, category, key)
        # A hand-made ref (e.g. from another machine's JSON) is re-validated before any file access.
        forged = ArtifactRef(stage, dataset, category, key, path=str(tmp_path / "elsewhere"))
        with pytest.raises(ValueError, match="invalid .* name"):
            store.exists(forged)
        with pytest.raises(ValueError, match="invalid .* name"):
            store.lock(forged).__enter__()
        with pytest.raises(ValueError, match="invalid .* name"):
            store.scratch(forged)
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "x").exists()


def test_data_check_refuses_unsafe_category(realnet, demo_data):
    child = realnet(["data", "check", "--dataset", "demo", "--root", str(demo_data), "--category", "../brick"])
    assert "unsafe category name '../brick'" in one_line_error(child)


class _Evil:
    """Unpickling this would run code (create a file): weights_only=True must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoints_load_with_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": _Evil(str(marker))}, ckpt)
    with pytest.raises(CheckpointError, match=f"checkpoint {ckpt} is corrupt or truncated.*Unpickl"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    with open(tmp_path / "plain.pkl", "wb") as f:  # a bare pickle is refused the same way
        pickle.dump({"payload": _Evil(str(marker))}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "plain.pkl")
    assert not marker.exists()


def test_predict_refuses_a_pickled_payload(realnet, demo_data, tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "realnet.pt"
    torch.save({"kind": "realnet", "payload": _Evil(str(marker))}, ckpt)
    child = realnet(["predict", "--model", str(ckpt), "--out", str(tmp_path / "pred"),
                     str(demo_data / "brick" / "test" / "good" / "000.png")])
    line = one_line_error(child)
    assert f"checkpoint {ckpt} is corrupt or truncated" in line and "Weights only load failed" in line
    assert not marker.exists()


def test_unknown_profile_is_not_a_path(realnet, demo_data, tmp_path):
    child = realnet(["run", "--no-prefect", "--config", "../../etc/passwd", "--artifacts", str(tmp_path / "a"),
                     "--data-root", str(demo_data), "--dataset", "demo", "--category", "brick", *sets()])
    assert "config ../../etc/passwd: not a .yaml file" in one_line_error(child)
