"""PRN's stages (Prototypical Residual Network, CVPR 2023): the k-means prototypes, then the network."""

from __future__ import annotations

from realnet_core.config import Config
from stages.common import Method
from stages.methods.prn import bench, prototypes, train_prn
from stages.methods.prn.detector import BUNDLE, load_detector


def upstream(stage: str, cfg: Config) -> list[str]:
    # PRN makes its own anomalies (extended and simulated): it never reads SIA.
    return {"prn_prototypes": [], "train_prn": ["prn_prototypes"]}[stage]


METHOD = Method(
    name="prn", sections=("backbone", "prn"), stages=(prototypes, train_prn), upstream=upstream,
    build_model=train_prn.build_model, load_detector=load_detector, model_file=BUNDLE,
    paper_results="paper_results.csv", bench_train_step=bench.bench_train_step, bench_detector=bench.random_detector,
)
