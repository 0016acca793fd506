"""A damaged artifact (a listed file gone or resized, a manifest that does not parse) is never taken for
a whole one: it does not exist for reuse, `damage` names the file, `latest` and `tables.load` skip it, and
the next build of the same key replaces it as a whole."""

import pandas as pd
import pytest

from storage.store import MANIFEST, Store, StoreError, folder_damage
from storage.tables import load, write_table


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "artifacts"))


def _publish(store, key="k", stage="evaluate", payload=b"12345"):
    ref = store.ref(stage, "demo", "brick", key)
    with store.build(ref, {}) as staging:
        (staging / "weights.pt").write_bytes(payload)
        write_table(pd.DataFrame({"auroc": [0.9]}), staging / "metrics.parquet")
    return ref


@pytest.mark.parametrize("damage", ["deleted", "truncated", "manifest cut in half", "manifest not json"])
def test_a_damaged_artifact_does_not_exist_for_reuse_and_is_named(store, damage):
    ref = _publish(store)
    folder = ref.path
    weights, manifest = f"{folder}/weights.pt", f"{folder}/{MANIFEST}"
    if damage == "deleted":
        import os

        os.unlink(weights)
        named = [weights, "is missing", "says 5 bytes"]
    elif damage == "truncated":
        open(weights, "wb").write(b"12")
        named = [weights, "has 2 bytes", "says 5 bytes"]
    else:
        text = open(manifest, "rb").read()
        open(manifest, "wb").write(text[: len(text) // 2] if damage == "manifest cut in half" else b"\xff\xfe")
        named = [manifest, "does not parse"]
    assert not store.exists(ref)
    problem = store.damage(ref)
    assert problem is not None and problem.startswith(f"artifact {folder} is damaged")
    for text in named:
        assert text in problem, problem
    assert folder_damage(folder) is not None and named[0] in folder_damage(folder)
    with pytest.raises(StoreError, match="is damaged"):
        store.verify(ref)
    assert store.latest("evaluate", "demo", "brick") is None


def test_a_whole_artifact_and_an_absent_one_have_no_damage(store):
    ref = _publish(store)
    assert store.exists(ref) and store.damage(ref) is None and folder_damage(ref.path) is None
    absent = store.ref("evaluate", "demo", "brick", "other")
    assert not store.exists(absent) and store.damage(absent) is None


def test_rebuilding_a_damaged_artifact_replaces_it_whole(store):
    ref = _publish(store, payload=b"12345")
    open(f"{ref.path}/weights.pt", "wb").write(b"1")
    with store.build(ref, {}) as staging:  # before, "another writer finished first" kept the damaged one
        (staging / "weights.pt").write_bytes(b"abcdef")
    assert store.exists(ref) and open(f"{ref.path}/weights.pt", "rb").read() == b"abcdef"
    assert [e["path"] for e in store.manifest(ref)["files"]] == ["weights.pt"]


def test_latest_skips_a_damaged_newer_artifact(store):
    old = _publish(store, "old")
    new = _publish(store, "new")
    open(f"{new.path}/{MANIFEST}", "w").write("{")
    assert store.latest("evaluate", "demo", "brick") == old


def test_tables_skip_a_damaged_artifact_and_name_it(store):
    _publish(store, "old")
    new = _publish(store, "new")
    (open(f"{new.path}/weights.pt", "wb")).write(b"")
    warned = []
    df = load("metrics", store.root, on_damaged=warned.append)
    assert df["artifact_key"].tolist() == ["old"]
    assert len(warned) == 1 and f"{new.path}/weights.pt has 0 bytes" in warned[0]


def test_tables_name_an_unparseable_manifest_on_stderr(store, capsys):
    ref = _publish(store)
    open(f"{ref.path}/{MANIFEST}", "w").write('{"files": [')
    assert load("metrics", store.root).empty
    err = capsys.readouterr().err
    assert err.startswith("realnet: warning: skipped artifact") and f"{ref.path}/{MANIFEST} does not parse" in err


def test_memory_root_damage_is_found_too(tmp_path):
    store = Store("memory://damage-test")
    ref = _publish(store)
    store.fs.pipe_file(f"{store._folder(ref)}/weights.pt", b"1")
    assert not store.exists(ref) and "has 1 bytes" in store.damage(ref)
    with store.build(ref, {}) as staging:
        (staging / "weights.pt").write_bytes(b"xyz")
    assert store.exists(ref)
    store.remove(ref)
