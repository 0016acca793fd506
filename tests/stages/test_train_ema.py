"""train.ema_rate: train_realnet saves the moving average of its weights over the training steps, and a run
killed and resumed saves the same average as one never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stages.methods.realnet import train_realnet

RATE = 0.5  # far from 1, so that every step's weights leave a visible share in the average


def _bundle(result) -> dict[str, torch.Tensor]:
    return torch.load(Path(result.ref.path) / train_realnet.BUNDLE, weights_only=True)["state_dict"]


def _recording_steps(monkeypatch, die_at: int | None = None) -> list[dict[str, torch.Tensor]]:
    """Patch train_step to record the network's parameters after every step (and to fail at call ``die_at``)."""
    after: list[dict[str, torch.Tensor]] = []
    step = train_realnet.train_step

    def recorded(net, *args, **kwargs):
        if die_at is not None and len(after) + 1 == die_at:
            raise RuntimeError("killed")
        out = step(net, *args, **kwargs)
        after.append({k: p.detach().clone() for k, p in net.named_parameters()})
        return out

    monkeypatch.setattr(train_realnet, "train_step", recorded)
    return after


def test_the_bundle_holds_the_moving_average_of_the_weights_after_each_step(
        tiny_cfg, train_realnet_on_a_copy, with_train, monkeypatch):
    after = _recording_steps(monkeypatch)
    _, result = train_realnet_on_a_copy(with_train(tiny_cfg, ema_rate=RATE))
    assert len(after) == tiny_cfg.train.epochs * tiny_cfg.train.steps_per_epoch
    saved = _bundle(result)
    for name in after[0]:
        want = after[0][name]
        for weights in after[1:]:
            want = RATE * want + (1 - RATE) * weights[name]
        torch.testing.assert_close(saved[name], want)
    moved = [n for n in after[0] if not torch.allclose(saved[n], after[-1][n])]
    assert moved, "the average equals the last step's weights: nothing was averaged"


def test_an_unset_rate_saves_the_last_steps_weights_under_the_key_from_before(
        tiny_cfg, train_realnet_on_a_copy, with_train, monkeypatch):
    after = _recording_steps(monkeypatch)
    cfg = with_train(tiny_cfg, ema_rate=None)
    assert "ema_rate" not in train_realnet.key_config(cfg)["train"]
    assert train_realnet.key_config(with_train(tiny_cfg, ema_rate=RATE))["train"]["ema_rate"] == RATE
    _, result = train_realnet_on_a_copy(cfg)
    saved = _bundle(result)
    for name, weights in after[-1].items():
        torch.testing.assert_close(saved[name], weights)


def test_a_killed_and_resumed_run_saves_the_same_average(tiny_cfg, train_realnet_on_a_copy, with_train, monkeypatch):
    cfg = with_train(tiny_cfg, ema_rate=RATE, epochs=3, checkpoint_every=1)
    whole = _bundle(train_realnet_on_a_copy(cfg, "whole")[1])
    steps = cfg.train.steps_per_epoch
    _recording_steps(monkeypatch, die_at=2 * steps + 1)  # the first step of epoch 3, after epoch 2's state
    with pytest.raises(RuntimeError, match="killed"):
        train_realnet_on_a_copy(cfg, "killed")
    monkeypatch.undo()
    store, resumed = train_realnet_on_a_copy(cfg, "killed")
    assert store.manifest(resumed.ref)["meta"]["resumed_from_epoch"] == 2
    again = _bundle(resumed)
    assert again.keys() == whole.keys()
    for name in whole:
        torch.testing.assert_close(again[name], whole[name])
