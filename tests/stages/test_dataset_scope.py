"""A dataset-scoped diffusion model is one artifact whichever category's task builds it."""

from __future__ import annotations

from pathlib import Path

import cv2
import torch

from realnet_core.config import load_config
from stages import train_diffusion
from stages.common import DATASET_SCOPE, execute
from storage.checkpoints import load_checkpoint
from storage.store import Store


def test_the_category_that_builds_a_dataset_scoped_model_does_not_change_it(tiny_overrides, tmp_path):
    cfg = load_config("demo", [*tiny_overrides, "diffusion.scope=dataset"])
    built = {}
    for cat in ("brick", "grass"):  # the first task of a flow may be either
        result = execute(train_diffusion, cfg, Store(str(tmp_path / cat)), "demo", cat)
        assert result.ref.category == DATASET_SCOPE
        built[cat] = result.ref
    assert built["brick"].key == built["grass"].key
    brick, grass = (load_checkpoint(Path(built[c].path) / "ema.pt") for c in ("brick", "grass"))
    assert brick["categories"] == grass["categories"] == ["brick", "grass"]
    for name, weight in brick["ema"].items():
        assert torch.equal(weight, grass["ema"][name]), name
    samples = [cv2.imread(str(Path(built[c].path) / "samples.png")) for c in ("brick", "grass")]
    assert samples[0] is not None and (samples[0] == samples[1]).all()
