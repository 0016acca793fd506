"""SimpleNet's stage: the feature adaptor and the discriminator, trained on normal images only."""

from __future__ import annotations

from realnet_core.config import Config
from stages.common import Method
from stages.methods.simplenet import train_simplenet
from stages.methods.simplenet.detector import BUNDLE, load_detector


def upstream(stage: str, cfg: Config) -> list[str]:
    # Normal images and Gaussian feature noise: no synthetic anomalies, so no diffusion, SIA or AFS stage.
    return {"train_simplenet": []}[stage]


METHOD = Method(
    name="simplenet", sections=("backbone", "simplenet"), stages=(train_simplenet,), upstream=upstream,
    build_model=train_simplenet.build_model, load_detector=load_detector, model_file=BUNDLE,
    paper_results="paper_results.csv", bench_train_step=train_simplenet.bench_train_step,
    bench_detector=train_simplenet.random_detector,
)
