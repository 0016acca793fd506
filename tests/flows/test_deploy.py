"""The two deployments: `realnet serve` and prefect.yaml (for workers) declare the same ones."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from flows.deploy import deployments
from flows.pipeline import realnet

REPO = Path(__file__).resolve().parents[2]


def test_serve_offers_all_categories_and_a_single_category_deployment():
    deps = {d.name: d for d in deployments()}
    assert set(deps) == {"all-categories", "category"}
    assert deps["all-categories"].parameters["categories"] == ["all"]
    assert deps["all-categories"].parameters["profile"] == "paper"
    assert len(deps["category"].parameters["categories"]) == 1
    for d in deps.values():
        assert d.flow_name == "realnet"
        # every default is a real parameter of the flow, so `--params` overrides merge cleanly
        assert set(d.parameters) <= set(inspect.signature(realnet.fn).parameters)


def test_prefect_yaml_declares_the_same_deployments_for_workers():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    served = {d.name: d.parameters for d in deployments()}
    declared = {d["name"]: d for d in spec["deployments"]}
    assert set(declared) == set(served)
    for name, d in declared.items():
        assert d["entrypoint"] == "flows/pipeline.py:realnet"
        assert d["parameters"] == served[name], name
        assert d["work_pool"]["name"]
    path, func = declared["category"]["entrypoint"].split(":")
    assert (REPO / path).is_file() and realnet.fn.__name__ == func
