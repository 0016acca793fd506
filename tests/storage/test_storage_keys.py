import os
from pathlib import Path

import pytest

from storage.keys import artifact_key, canonical_json, fingerprint_files
from storage.names import safe_name


def test_canonical_json_is_sorted_compact_and_normalised():
    obj = {"b": (1, 2), "a": {"z": Path("/x/y"), "y": 0.1}, "c": 1e-4, "d": None, "e": True}
    assert canonical_json(obj) == '{"a":{"y":0.1,"z":"/x/y"},"b":[1,2],"c":0.0001,"d":null,"e":true}'


@pytest.mark.parametrize("bad, type_name", [({1, 2}, "set"), (object(), "object"), ({1: "a"}, "int")])
def test_canonical_json_names_the_offending_type(bad, type_name):
    with pytest.raises(TypeError, match=type_name):
        canonical_json({"cfg": [bad]})


BASE = dict(stage="afs", version="1", config={"dims": [1, 2], "lr": 0.001}, upstream=["k1", "k2"])


def test_artifact_key_is_stable_16_hex_and_ignores_dict_and_upstream_order():
    key = artifact_key(**BASE)
    assert len(key) == 16 and int(key, 16) >= 0
    assert artifact_key(**BASE) == key
    reordered = dict(BASE, config={"lr": 0.001, "dims": [1, 2]}, upstream=["k2", "k1"])
    assert artifact_key(**reordered) == key
    assert artifact_key(**dict(BASE, upstream={"a": "k1", "b": "k2"})) == artifact_key(
        **dict(BASE, upstream={"b": "k2", "a": "k1"})
    )


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "train"},
        {"version": "2"},
        {"config": {"dims": [1, 2], "lr": 0.002}},
        {"config": {"dims": [2, 1], "lr": 0.001}},
        {"upstream": ["k1", "k3"]},
        {"data_fingerprint": "abc"},
    ],
)
def test_artifact_key_changes_with_every_input(change):
    assert artifact_key(**dict(BASE, **change)) != artifact_key(**BASE)


def _tree(root: Path) -> None:
    (root / "good").mkdir(parents=True)
    (root / "good" / "a.png").write_bytes(b"aaa")
    (root / "good" / "b.png").write_bytes(b"bbbb")


def test_fingerprint_stat_and_content_modes(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _tree(one)
    _tree(two)
    fp_stat = fingerprint_files(["good"], one)
    fp_content = fingerprint_files(["good"], one, mode="content")
    # Content mode does not depend on where the tree lives or on mtimes.
    os.utime(two / "good" / "a.png", ns=(1, 1))
    assert fingerprint_files(["good"], two, mode="content") == fp_content
    assert fingerprint_files(["good"], two) != fingerprint_files(["good"], one)
    os.utime(one / "good" / "a.png", ns=(5, 5))
    assert fingerprint_files(["good"], one) != fp_stat
    (one / "good" / "b.png").write_bytes(b"BBBB")
    assert fingerprint_files(["good"], one, mode="content") != fp_content
    # Order of the listed paths does not matter.
    files = [one / "good" / "a.png", one / "good" / "b.png"]
    assert fingerprint_files(files, one) == fingerprint_files(files[::-1], one)


def test_fingerprint_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        fingerprint_files(["nope.png"], tmp_path)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".", "..", ".hidden", "a b", "x" * 101, "a\\b", None])
def test_safe_name_rejects(bad):
    with pytest.raises(ValueError, match="category") as info:
        safe_name(bad, "category")
    assert repr(bad) in str(info.value)


@pytest.mark.parametrize("good", ["bottle", "pcb1", "metal_nut", "v1.2-rc", "x" * 100, "a..b"])
def test_safe_name_accepts(good):
    assert safe_name(good, "category") == good
