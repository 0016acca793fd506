"""The paper's other anomaly sources (DTD textures, CutPaste) run the pipeline without the diffusion stages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flows.runner import run_pipeline
from storage.tables import load


@pytest.mark.parametrize("source", ["texture", "cutpaste"])
def test_a_run_with_another_source_skips_diffusion_and_evaluates(source, tiny_overrides, tmp_path):
    extra = [f"synthesis.source={source}"]
    if source == "texture":
        textures = tmp_path / "dtd" / "images" / "banded"
        textures.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for i in range(3):
            cv2.imwrite(str(textures / f"banded_{i:04d}.jpg"), rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
        extra += [f"synthesis.texture_root={tmp_path / 'dtd' / 'images'}", "synthesis.delta=[0.2,1.0]"]
    artifacts = tmp_path / "artifacts"
    summary = run_pipeline(categories=["brick"], overrides=[*tiny_overrides, *extra], artifacts=str(artifacts),
                           use_prefect=False)
    assert [(r["stage"], r["status"]) for r in summary["stages"]] == [
        ("select_features", "ran"), ("train_realnet", "ran"), ("calibrate", "ran"), ("evaluate", "ran")]
    metrics = load("metrics", str(artifacts))
    assert len(metrics) == 1 and 0.0 <= metrics.image_auroc.iloc[0] <= 1.0
