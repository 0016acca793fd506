"""RealNet's stages: AFS feature selection, then the reconstruction networks and the discriminator."""

from __future__ import annotations

from realnet_core.config import Config
from stages.common import Method
from stages.methods.realnet import bench, select_features, train_realnet
from stages.methods.realnet.detector import BUNDLE, load_detector


def upstream(stage: str, cfg: Config) -> list[str]:
    sia = ["generate_sia"] if cfg.synthesis.source == "sia" else []
    return {"select_features": sia, "train_realnet": ["select_features", *sia]}[stage]


METHOD = Method(
    name="realnet", sections=("backbone", "afs", "train"), stages=(select_features, train_realnet),
    upstream=upstream, build_model=train_realnet.build_model, load_detector=load_detector, model_file=BUNDLE,
    paper_results="paper_results.csv", bench_train_step=bench.bench_train_step, bench_detector=bench.random_detector,
)
