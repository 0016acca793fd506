"""runtime.loader_workers moves image reading into worker processes and changes nothing computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from realnet_core.synthesis.sources import SIASource
from stages.loaders import SourceSteps, TestBatches, prefetch


def test_a_steps_source_images_depend_only_on_the_seed_and_step_number():
    sia = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    steps = SourceSteps(SIASource(sia), n=4, size=8, seed=(0, "demo", "brick"))
    assert torch.equal(steps[3], steps[3])
    assert not torch.equal(steps[3], steps[4])
    other = SourceSteps(SIASource(sia), n=4, size=8, seed=(1, "demo", "brick"))
    assert not torch.equal(steps[3], other[3])


def test_prefetch_with_workers_yields_the_same_batches_in_order_as_without():
    sia = np.random.default_rng(1).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    steps = SourceSteps(SIASource(sia), n=3, size=8, seed=(0, "x"))
    plain = list(prefetch(steps, range(5, 11), torch.device("cpu"), workers=0))
    ahead = list(prefetch(steps, range(5, 11), torch.device("cpu"), workers=2))
    assert len(plain) == len(ahead) == 6
    assert all(torch.equal(a, b) for a, b in zip(plain, ahead, strict=True))


def test_test_batches_cover_every_image_once_as_uint8(stage_data):
    paths = sorted(str(p) for p in (Path(stage_data) / "brick" / "test").rglob("*.png"))
    batches = TestBatches(paths, batch_size=4, size=32)
    got = [batches[i] for i in range(len(batches))]
    assert sum(len(b) for b in got) == len(paths) and len(got) == -(-len(paths) // 4)
    assert all(b.dtype == torch.uint8 and b.shape[1:] == (32, 32, 3) for b in got)


def test_a_bad_test_image_read_in_a_worker_still_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(Exception, match="broken.png"):
        list(prefetch(TestBatches([str(bad)], 1, 16), range(1), torch.device("cpu"), workers=1))


def test_training_and_evaluation_with_loader_workers_match_the_plain_run(pipeline_run, tiny_cfg,
                                                                          rerun_on_a_copy):
    _, results = pipeline_run
    cfg = tiny_cfg.model_copy(update={"runtime": tiny_cfg.runtime.model_copy(update={"loader_workers": 2})})
    redo = {"train_realnet", "evaluate"}
    again = rerun_on_a_copy(cfg, redo)
    assert {s: r.status for s, r in again.items() if s in redo} == {"train_realnet": "ran", "evaluate": "ran"}

    def weights(res):
        return torch.load(Path(res.ref.path) / "realnet.pt", weights_only=True)["state_dict"]

    old, new = weights(results["train_realnet"]), weights(again["train_realnet"])
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    scores = [pd.read_parquet(Path(r["evaluate"].ref.path) / "scores.parquet") for r in (results, again)]
    pd.testing.assert_frame_equal(scores[0], scores[1])
