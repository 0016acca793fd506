"""What enters each stage's artifact key: files the config names, and settings that change no output.

Keys only, computed with ``stages.common.stage_key``: no stage runs here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from realnet_core.config import ConfigError, load_config
from stages import dag, generate_sia, train_diffusion
from stages.common import stage_key
from stages.methods.realnet import select_features, train_realnet


def _keys(cfg) -> dict[str, str]:
    return {s: stage_key(dag.MODULES[s], cfg, "demo", "brick", {}) for s in dag.active(cfg)}


def _replace(path: Path, data: bytes) -> None:
    # Same name, new bytes and a later mtime: what copying fresh weights over old ones does.
    path.write_bytes(data)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def cfg_with(tiny_overrides):
    return lambda *extra: load_config("demo", [*tiny_overrides, *extra])


def test_replacing_the_init_checkpoint_under_the_same_name_changes_the_diffusion_key(cfg_with, tmp_path):
    ckpt = tmp_path / "256x256_diffusion_uncond.pt"
    ckpt.write_bytes(b"old weights")
    cfg = cfg_with(f"diffusion.init_checkpoint={ckpt}")
    before = stage_key(train_diffusion, cfg, "demo", "brick", {})
    _replace(ckpt, b"new weights, longer")
    assert stage_key(train_diffusion, cfg, "demo", "brick", {}) != before


def test_replacing_backbone_weights_changes_the_keys_of_the_stages_that_build_the_backbone(cfg_with, tmp_path):
    weights = tmp_path / "wide_resnet50_2.pth"
    weights.write_bytes(b"old")
    cfg = cfg_with(f"backbone.weights={weights}")
    before = _keys(cfg)
    _replace(weights, b"newer")
    after = _keys(cfg)
    assert {s for s in before if before[s] != after[s]} == {"select_features", "train_realnet"}


def test_a_new_file_in_the_texture_folder_changes_the_training_keys(cfg_with, tmp_path):
    textures = tmp_path / "dtd"
    textures.mkdir()
    (textures / "a.png").write_bytes(b"png")
    cfg = cfg_with("synthesis.source=texture", f"synthesis.texture_root={textures}")
    before = _keys(cfg)
    (textures / "b.png").write_bytes(b"png")
    after = _keys(cfg)
    assert {s for s in before if before[s] != after[s]} == {"select_features", "train_realnet"}


def test_a_missing_named_file_is_an_error_naming_its_config_key(cfg_with, tmp_path):
    cfg = cfg_with(f"diffusion.init_checkpoint={tmp_path / 'absent.pt'}")
    with pytest.raises(FileNotFoundError, match=r"diffusion\.init_checkpoint: no such file.*absent\.pt"):
        stage_key(train_diffusion, cfg, "demo", "brick", {})
    with pytest.raises(FileNotFoundError, match=r"diffusion\.init_checkpoint"):
        dag.check_inputs(cfg)


def test_missing_default_backbone_weights_are_found_before_the_first_stage(cfg_with, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match=r"resnet34-[0-9a-f]+\.pth.*never downloads"):
        dag.check_inputs(cfg_with("backbone.name=resnet34"))
    dag.check_inputs(cfg_with())  # the demo's EfficientNet-Lite0 weights ship in a package


@pytest.mark.parametrize("override", ["diffusion.checkpoint_every=3", "train.checkpoint_every=7"])
def test_checkpoint_intervals_enter_no_key(cfg_with, override):
    assert _keys(cfg_with(override)) == _keys(cfg_with())


def test_texture_folder_enters_no_key_while_the_source_is_sia(cfg_with, tmp_path):
    assert _keys(cfg_with(f"synthesis.texture_root={tmp_path}")) == _keys(cfg_with())


def test_normal_fraction_enters_train_realnet_but_not_afs(cfg_with):
    before, after = _keys(cfg_with()), _keys(cfg_with("synthesis.normal_fraction=0.25"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}


def test_sia_augment_enters_train_realnet_alone_and_off_it_enters_no_key(cfg_with):
    before = _keys(cfg_with("synthesis.sia_augment=0"))
    after = _keys(cfg_with("synthesis.sia_augment=0.5"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "sia_augment" not in train_realnet.key_config(cfg_with("synthesis.sia_augment=0"))["synthesis"]


def test_self_augment_enters_train_realnet_alone_and_off_it_enters_no_key(cfg_with):
    before = _keys(cfg_with("synthesis.self_augment=0"))
    after = _keys(cfg_with("synthesis.self_augment=0.25"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "self_augment" not in train_realnet.key_config(cfg_with("synthesis.self_augment=0"))["synthesis"]


def test_shade_enters_train_realnet_alone_and_off_it_enters_no_key(cfg_with):
    before = _keys(cfg_with("synthesis.shade=0"))
    after = _keys(cfg_with("synthesis.shade=0.2"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "shade" not in train_realnet.key_config(cfg_with("synthesis.shade=0"))["synthesis"]


def test_disc_hidden_enters_train_realnet_alone_and_the_authors_width_enters_no_key(cfg_with):
    before = _keys(cfg_with("train.disc_hidden=128"))
    after = _keys(cfg_with("train.disc_hidden=64"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "disc_hidden" not in train_realnet.key_config(cfg_with("train.disc_hidden=128"))["train"]


def test_rrs_input_enters_train_realnet_alone_and_raw_enters_no_key(cfg_with):
    before = _keys(cfg_with("train.rrs_input=raw"))
    after = _keys(cfg_with("train.rrs_input=normed"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "rrs_input" not in train_realnet.key_config(cfg_with("train.rrs_input=raw"))["train"]


def test_an_unused_classifier_enters_no_key_and_guidance_needs_dataset_scope(cfg_with, tmp_path):
    clf = tmp_path / "256x256_classifier.pt"
    clf.write_bytes(b"classifier")
    assert _keys(cfg_with(f"sia.classifier_checkpoint={clf}")) == _keys(cfg_with())
    with pytest.raises(ConfigError, match="needs diffusion.scope=dataset"):
        cfg_with(f"sia.classifier_checkpoint={clf}", "sia.guidance_scale=1.0")
    with pytest.raises(ConfigError, match="needs sia.classifier_checkpoint"):
        cfg_with("diffusion.scope=dataset", "sia.guidance_scale=1.0")

    guided = cfg_with("diffusion.scope=dataset", f"sia.classifier_checkpoint={clf}", "sia.guidance_scale=1.0")
    before = stage_key(generate_sia, guided, "demo", "brick", {})
    _replace(clf, b"another classifier")
    assert stage_key(generate_sia, guided, "demo", "brick", {}) != before


def test_stage_files_name_real_config_keys():
    cfg = load_config("paper")
    for module in (train_diffusion, generate_sia, select_features, train_realnet, dag.MODULES["evaluate"]):
        for key in module.FILES:
            section, field = key.split(".")
            assert hasattr(getattr(cfg, section), field), (module.NAME, key)


def test_the_thread_count_enters_no_key(cfg_with):
    assert _keys(cfg_with("runtime.threads=1")) == _keys(cfg_with("runtime.threads=auto"))


def test_disc_min_width_enters_train_realnet_only_where_it_changes_a_width(cfg_with):
    # At the authors' 128 the tail is 32, 8 and 4 whatever the floor up to 4: the key stays as before the floor.
    assert "disc_min_width" not in train_realnet.key_config(cfg_with("train.disc_hidden=128"))["train"]
    narrow = _keys(cfg_with("train.disc_hidden=64", "train.disc_min_width=2"))
    floored = _keys(cfg_with("train.disc_hidden=64", "train.disc_min_width=4"))
    assert {s for s in narrow if narrow[s] != floored[s]} == {"train_realnet"}
    assert "disc_min_width" not in train_realnet.key_config(cfg_with("train.disc_hidden=64",
                                                                      "train.disc_min_width=2"))["train"]


def test_disc_leak_enters_train_realnet_alone_and_relu_enters_no_key(cfg_with):
    before = _keys(cfg_with("train.disc_leak=0"))
    after = _keys(cfg_with("train.disc_leak=0.01"))
    assert {s for s in before if before[s] != after[s]} == {"train_realnet"}
    assert "disc_leak" not in train_realnet.key_config(cfg_with("train.disc_leak=0"))["train"]
