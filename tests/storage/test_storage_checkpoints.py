import os

import pytest
import torch

from storage.checkpoints import CheckpointError, load_checkpoint, load_state_into, save_checkpoint


def test_round_trip(tmp_path):
    model = torch.nn.Linear(4, 3)
    path = tmp_path / "weights.pt"
    save_checkpoint({"model": model.state_dict(), "step": 7, "losses": [0.5, 0.25]}, path)
    assert os.listdir(tmp_path) == ["weights.pt"]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["losses"] == [0.5, 0.25]
    other = torch.nn.Linear(4, 3)
    load_state_into(other, ckpt["model"], path)
    assert torch.equal(other.weight, model.weight)


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "w.pt"
    save_checkpoint({"v": torch.zeros(2)}, path)
    save_checkpoint({"v": torch.ones(2)}, path)
    assert torch.equal(load_checkpoint(path)["v"], torch.ones(2))
    assert os.listdir(tmp_path) == ["w.pt"]


def test_corrupt_truncated_missing_and_non_dict(tmp_path):
    path = tmp_path / "w.pt"
    save_checkpoint({"v": torch.arange(1000.0)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="w.pt.*corrupt or truncated"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="nope.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(tmp_path / "list.pt")


def test_weights_only_refuses_arbitrary_objects(tmp_path):
    torch.save({"obj": _Custom()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(tmp_path / "evil.pt")


class _Custom:
    pass


def test_architecture_mismatch_lists_keys(tmp_path):
    source = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    target = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(CheckpointError) as info:
        load_state_into(target, source.state_dict(), "ckpt/other.pt")
    msg = str(info.value)
    assert "ckpt/other.pt" in msg and "Sequential" in msg
    assert "missing: 2.bias, 2.weight" in msg
    assert "unexpected: 1.bias, 1.weight" in msg
    assert "0.weight (3, 4) vs model (5, 4)" in msg
