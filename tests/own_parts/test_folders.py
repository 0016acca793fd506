"""The folder dataset's listing rules, its shares, its foreground rules and its one-line errors."""

from __future__ import annotations

import pytest

from realnet_core.config import ConfigError, load_config
from realnet_core.data import folders
from realnet_core.data.errors import DatasetError
from realnet_core.synthesis.foreground import WHOLE_IMAGE, ForegroundRule, foreground_rule, rule_by_name


def _img(path, seed=0):
    from data.conftest import write_image

    return write_image(path, seed=seed)


def test_hold_out_is_seeded_disjoint_and_keeps_at_least_one_image():
    paths = [f"{i:02d}.png" for i in range(20)]
    kept, held = folders.hold_out(paths, 0.2, seed=0, salt=1)
    assert len(held) == 4 and sorted(kept + held) == paths and not set(kept) & set(held)
    assert folders.hold_out(list(reversed(paths)), 0.2, 0, 1) == (kept, held)  # the order given does not matter
    assert folders.hold_out(paths, 0.2, seed=1, salt=1)[1] != held
    assert folders.hold_out(paths[:3], 0.01, 0, 1)[1] and len(folders.hold_out(paths[:2], 0.9, 0, 1)[0]) == 1
    assert folders.hold_out(paths, 0.0, 0, 1) == (paths, [])


def test_plain_folders_match_masks_by_stem_and_hold_out_normal_test_images(tmp_path):
    for i in range(10):
        _img(tmp_path / "normal" / f"n{i}.png", i)
    for stem in ("a", "b"):
        _img(tmp_path / "abnormal" / f"{stem}.png")
    _img(tmp_path / "masks" / "a_mask.png")
    split = folders.read_plain("cup", str(tmp_path / "normal"), str(tmp_path / "abnormal"), str(tmp_path / "masks"))
    assert split.counts() == {"train": 8, "test_good": 2, "test_anomalous": 2, "masks": 1}
    support = folders.metric_support(split)
    assert support["image_auroc"] is None and support["pixel_auroc"] == "masks for only 1 of 2 anomalous test images"
    _img(tmp_path / "normal_test" / "t.png")
    given = folders.read_plain("cup", str(tmp_path / "normal"), normal_test=str(tmp_path / "normal_test"))
    assert given.counts()["train"] == 10 and [s.path for s in given.test] == [str(tmp_path / "normal_test" / "t.png")]
    assert folders.metric_support(given)["image_auroc"] == "no anomalous test images"


def test_an_empty_normal_folder_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "normal").mkdir()
    with pytest.raises(DatasetError, match=f"normal folder for folder/cup has no images: {tmp_path / 'normal'}$"):
        folders.read_plain("cup", str(tmp_path / "normal"))


def test_a_mask_without_an_image_is_an_error_naming_the_mask(tmp_path):
    _img(tmp_path / "normal" / "n.png")
    _img(tmp_path / "normal" / "m.png")
    _img(tmp_path / "abnormal" / "a.png")
    _img(tmp_path / "masks" / "typo_mask.png")
    with pytest.raises(DatasetError, match=r"mask .*typo_mask.png has no image \(expected an image named typo"):
        folders.read_plain("cup", str(tmp_path / "normal"), str(tmp_path / "abnormal"), str(tmp_path / "masks"))
    tree = tmp_path / "tree" / "part"
    _img(tree / "train" / "good" / "0.png")
    _img(tree / "test" / "dent" / "0.png")
    _img(tree / "ground_truth" / "dent" / "1_mask.png")
    with pytest.raises(DatasetError, match=r"mask .*ground_truth/dent/1_mask.png has no image"):
        folders.read_tree(tmp_path / "tree", "part")


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "my part", "tab\tname", ""])
def test_an_unsafe_category_name_is_refused_before_any_path_is_joined(name, tmp_path):
    with pytest.raises(DatasetError, match="category name"):
        folders.read_tree(tmp_path, name)


def test_an_unsafe_name_in_the_config_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"data.folders.*unsafe category name 'my part'"):
        load_config("demo", ["data.folders={'my part': {normal: x}}"])


def test_foreground_rules_by_name_custom_or_whole_and_an_unknown_name_is_an_error():
    assert rule_by_name("bottle") == rule_by_name("mvtec/bottle") == foreground_rule("mvtec", "bottle")
    assert rule_by_name("whole") == WHOLE_IMAGE == foreground_rule("folder", "anything")
    cfg = load_config("demo", ["data.foreground.cup={channel: blue, method: triangle, foreground: dark, close: 5}",
                               "data.foreground.mug=pcb1"])
    from stages.inputs import foreground_of

    assert foreground_of(cfg, "folder", "cup") == ForegroundRule(False, "blue", "triangle", "dark", 5, 0)
    assert foreground_of(cfg, "folder", "mug") == foreground_rule("visa", "pcb1")
    assert foreground_of(cfg, "folder", "other") == WHOLE_IMAGE
    with pytest.raises(ConfigError, match="data.foreground.*cup: foreground rule 'botle'.*did you mean 'bottle'"):
        load_config("demo", ["data.foreground.cup=botle"])


def test_a_configured_foreground_rule_changes_only_its_own_categorys_training_keys(tmp_path):
    from stages.training_data import training_fingerprint

    for i in range(4):
        _img(tmp_path / "a" / f"{i}.png", i)
    base = ["data.dataset=folder", f"data.folders.cup.normal={tmp_path / 'a'}",
            f"data.folders.mug.normal={tmp_path / 'a'}"]
    plain, ruled = load_config("demo", base), load_config("demo", [*base, "data.foreground.cup=bottle"])
    assert training_fingerprint(plain, "folder", "cup") != training_fingerprint(ruled, "folder", "cup")
    assert training_fingerprint(plain, "folder", "mug") == training_fingerprint(ruled, "folder", "mug")


def test_bad_own_data_gets_one_line_errors_from_the_commands_and_nothing_is_written(tmp_path, capsys):
    from flows.cli import main

    artifacts = tmp_path / "artifacts"
    (tmp_path / "tree" / "cup" / "train" / "good").mkdir(parents=True)
    code = main(["run", "--dataset", "folder", "--data-root", str(tmp_path / "tree"), "--category", "cup",
                 "--no-prefect", "--artifacts", str(artifacts)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"realnet: error: DatasetError: train folder for folder/cup has no images: "
                                 f"{tmp_path / 'tree' / 'cup' / 'train' / 'good'}")
    code = main(["run", "--dataset", "folder", "--data-root", str(tmp_path / "tree"), "--category", "../cup",
                 "--no-prefect", "--artifacts", str(artifacts)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unsafe category name '../cup'" in err
    assert not artifacts.exists()

    _img(tmp_path / "n" / "0.png")
    _img(tmp_path / "a" / "x.png")
    _img(tmp_path / "m" / "y.png")
    sets = [f"data.folders.cup.{key}={tmp_path / folder}" for key, folder in
            (("normal", "n"), ("abnormal", "a"), ("masks", "m"))]
    code = main(["data", "check", "--dataset", "folder", *[a for s in sets for a in ("--set", s)]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"realnet: error: mask {tmp_path / 'm' / 'y.png'} has no image")


def test_data_check_says_which_metrics_a_folder_dataset_supports_and_previews_its_foreground(tmp_path, capsys):
    import json

    from flows.cli import main

    for i in range(6):
        _img(tmp_path / "tree" / "cup" / "train" / "good" / f"{i}.png", i)
    _img(tmp_path / "tree" / "cup" / "test" / "dent" / "0.png")
    code = main(["data", "check", "--dataset", "folder", "--root", str(tmp_path / "tree"), "--json",
                 "--set", "data.foreground.cup=bottle", "--preview", str(tmp_path / "preview")])
    assert code == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["supports"] == "image_auroc" and report["val"] == 1
    assert report["unsupported"] == "pixel_auroc: no ground-truth masks; pro: no ground-truth masks"
    assert report["foreground"] == "gray, otsu, dark; close 6, open 6"
    preview = tmp_path / "preview" / "folder_cup_foreground.png"
    assert report["preview"] == str(preview) and preview.stat().st_size > 1000
