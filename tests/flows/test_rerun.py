"""Rerun semantics of the cached graph, asserted from the run summary (in-process, without Prefect).

`run_pipeline(use_prefect=False)` walks exactly the graph the Prefect flow walks, so these
tests cover the caching rules without paying for a Prefect flow run. All tests share one
artifact root built once by ``base``; each varies the config in its own way, so every
config change produces keys no other test has built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.runner import run_pipeline, status_table

pytestmark = pytest.mark.slow

STAGES = ["train_diffusion", "generate_sia", "select_features", "train_realnet", "calibrate", "evaluate"]


def _status(summary: dict) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in summary["stages"] if r["category"] == "brick"}


def _ran(summary: dict) -> set[str]:
    return {stage for stage, status in _status(summary).items() if status == "ran"}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def base(artifacts: Path, tiny_overrides: list[str]) -> dict:
    """The first run: every stage of brick is built."""
    return run_pipeline(categories=["brick"], overrides=tiny_overrides, artifacts=str(artifacts), use_prefect=False)


def _run(artifacts: Path, overrides: list[str], extra: list[str] = (), **kw) -> dict:
    return run_pipeline(categories=["brick"], overrides=[*overrides, *extra], artifacts=str(artifacts),
                        use_prefect=False, **kw)


def test_first_run_builds_every_stage_in_order(base):
    assert [r["stage"] for r in base["stages"]] == STAGES
    assert _ran(base) == set(STAGES)
    for row in base["stages"]:
        assert (Path(row["path"]) / "manifest.json").is_file(), row
        assert row["key"] and row["seconds"] >= 0


def test_second_identical_run_executes_no_stage(base, artifacts, tiny_overrides):
    again = _run(artifacts, tiny_overrides)
    assert set(_status(again).values()) == {"reused"}
    assert [r["key"] for r in again["stages"]] == [r["key"] for r in base["stages"]]


def test_changing_afs_reruns_afs_training_and_evaluation_only(base, artifacts, tiny_overrides):
    changed = _run(artifacts, tiny_overrides, ["afs.seed=7"])
    assert _status(changed) == {"train_diffusion": "reused", "generate_sia": "reused", "select_features": "ran",
                                "train_realnet": "ran", "calibrate": "ran", "evaluate": "ran"}
    old = {r["stage"]: r["key"] for r in base["stages"]}
    new = {r["stage"]: r["key"] for r in changed["stages"]}
    assert new["generate_sia"] == old["generate_sia"]
    assert all(new[s] != old[s] for s in ("select_features", "train_realnet", "calibrate", "evaluate"))


def test_changing_only_an_evaluate_setting_reruns_evaluation_only(base, artifacts, tiny_overrides):
    changed = _run(artifacts, tiny_overrides, ["evaluate.pro_fpr_limit=0.2"])
    assert _ran(changed) == {"evaluate"}
    assert set(_status(changed).values()) == {"reused", "ran"}
    # The image score's pooling also sets the threshold: calibrate reruns with it, training does not.
    pooled = _run(artifacts, tiny_overrides, ["evaluate.pool_size=4"])
    assert _ran(pooled) == {"calibrate", "evaluate"}


def test_runtime_settings_do_not_touch_artifact_keys(base, artifacts, tiny_overrides):
    changed = _run(artifacts, tiny_overrides, ["runtime.bf16=false", "runtime.progress=true"])
    assert set(_status(changed).values()) == {"reused"}


def test_rerun_forces_the_stage_and_its_downstream(base, artifacts, tiny_overrides):
    forced = _run(artifacts, tiny_overrides, rerun=["select_features"])
    assert _ran(forced) == {"select_features", "train_realnet", "calibrate", "evaluate"}
    assert _status(forced)["generate_sia"] == "reused"
    # same config, so the rebuilt artifacts keep their keys and stay reusable
    assert [r["key"] for r in forced["stages"]] == [r["key"] for r in base["stages"]]
    assert set(_status(_run(artifacts, tiny_overrides)).values()) == {"reused"}


def test_rerun_of_an_unknown_stage_is_refused(artifacts, tiny_overrides):
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        _run(artifacts, tiny_overrides, rerun=["train"])


def test_status_shows_current_stale_and_missing(base, artifacts, tiny_overrides):
    def states(extra: list[str], categories: list[str]) -> dict[tuple[str, str], str]:
        df = status_table("demo", [*tiny_overrides, *extra], categories, None, None, str(artifacts))
        return {(r.category, r.stage): r.state for r in df.itertuples()}

    current = states([], ["brick"])
    assert current == {("brick", s): "current" for s in STAGES}

    # a train.* value never run: AFS and everything upstream stay current, downstream is stale
    stale = states(["train.seed=123"], ["brick"])
    assert stale == {("brick", "train_diffusion"): "current", ("brick", "generate_sia"): "current",
                     ("brick", "select_features"): "current", ("brick", "train_realnet"): "stale",
                     ("brick", "calibrate"): "stale", ("brick", "evaluate"): "stale"}

    # a category never run has nothing at all
    assert set(states([], ["grass"]).values()) == {"missing"}

    # a killed build of this config left a checkpoint behind: the next run resumes it
    from storage.store import Store

    df = status_table("demo", [*tiny_overrides, "train.seed=321"], ["brick"], None, None, str(artifacts))
    store, key = Store(str(artifacts)), df.set_index("stage").loc["train_realnet", "key"]
    scratch = store.scratch(store.ref("train_realnet", "demo", "brick", key))
    (scratch / "train_state.pt").write_bytes(b"checkpoint")
    assert states(["train.seed=321"], ["brick"])[("brick", "train_realnet")] == "resumable"
    store.clear_scratch(store.ref("train_realnet", "demo", "brick", key))


def test_tables_show_the_newest_artifacts_or_with_current_those_of_the_config(base, artifacts, tiny_overrides, capsys):
    import json

    from flows.cli import main
    from storage.tables import load

    newest = _run(artifacts, tiny_overrides, ["evaluate.pool_size=3"])  # built last: the newest evaluate
    keys = {name: {r["stage"]: r["key"] for r in run["stages"]}["evaluate"] for name, run in
            (("base", base), ("newest", newest))}
    assert load("metrics", str(artifacts)).set_index("category").loc["brick", "artifact_key"] == keys["newest"]

    sets = [arg for o in tiny_overrides for arg in ("--set", o)]
    assert main(["tables", "metrics", "--current", "--artifacts", str(artifacts), "--category", "brick", *sets,
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["artifact_key"] for r in rows] == [keys["base"]]
