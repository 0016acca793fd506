"""The method registry: the DAG, evaluate, predict and the paper comparison ask it, never a method by name."""

import pytest
import torch

from realnet_core.config import ConfigError, load_config
from stages import dag, methods


def test_realnet_is_registered_with_its_stages_and_the_dag_frames_them():
    cfg = load_config("demo")
    method = methods.of(cfg)
    assert method.name == "realnet" and method.model_stage == "train_realnet"
    assert [s.NAME for s in method.stages] == ["select_features", "train_realnet"]
    assert dag.active(cfg) == ["train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate",
                               "evaluate"]
    assert dag.upstream("calibrate", cfg) == ["train_realnet"]
    assert dag.upstream("evaluate", cfg) == ["train_realnet", "calibrate"]
    assert dag.upstream("train_realnet", cfg) == ["select_features", "generate_sia"]
    texture = load_config("demo", ["synthesis.source=cutpaste"])
    assert dag.active(texture) == ["select_features", "train_realnet", "calibrate", "evaluate"]
    assert dag.upstream("train_realnet", texture) == ["select_features"]


def test_every_method_lives_in_its_own_package_under_stages_methods():
    # The import contracts (pyproject.toml) and the package data match `stages.methods.*`: a method elsewhere
    # would escape its independence check and ship without its paper numbers.
    for name, method in methods.METHODS.items():
        packages = {s.__name__.rpartition(".")[0] for s in method.stages}
        assert packages == {f"stages.methods.{name}"}, (name, packages)


def test_an_unknown_method_names_the_registered_ones():
    cfg = load_config("demo", ["method=nosuch"])
    with pytest.raises(ConfigError, match="method='nosuch': unknown method; methods: realnet"):
        dag.active(cfg)


def test_the_paper_results_are_the_methods_own():
    paper = methods.paper_results("realnet")
    assert {"dataset", "category", "image_auroc", "pixel_auroc", "pro"} <= set(paper.columns)
    assert len(paper) >= 15


def test_a_folder_without_a_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_realnet artifact"):
        methods.load_detector(tmp_path, torch.device("cpu"))
