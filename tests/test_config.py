"""Config profiles, overrides and the errors that name the bad key or value."""

import re

import pytest

from realnet_core.config import Config, ConfigError, load_config


def test_paper_profile_holds_the_paper_settings():
    cfg = load_config("paper")
    assert cfg.data.image_size == 256
    assert cfg.backbone.name == "wide_resnet50_2"
    assert cfg.afs.dims == [256, 512, 512, 256]
    assert cfg.afs.batches * cfg.afs.batch_size == 1024
    assert cfg.sia.num_images == 10000 and cfg.sia.strength == (0.1, 0.2) and cfg.sia.sampling_steps == 20
    assert cfg.diffusion.channel_mult == [1, 1, 2, 2, 4, 4] and cfg.diffusion.num_channels == 256
    assert cfg.train.batch_size == 16 and cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.rrs_ratio == pytest.approx(1 / 3)
    assert cfg.evaluate.pool_size == 16 and cfg.evaluate.pro_fpr_limit == pytest.approx(0.3)


def test_demo_profile_uses_the_offline_backbone():
    cfg = load_config("demo")
    assert cfg.profile == "demo"
    assert cfg.backbone.name == "efficientnet_lite0"
    assert cfg.data.dataset == "demo"


def test_override_parses_yaml_values():
    cfg = load_config("paper", ["afs.dims=[128,256,256,128]", "sia.strength=[0.05, 0.3]", "train.epochs=5"])
    assert cfg.afs.dims == [128, 256, 256, 128]
    assert cfg.sia.strength == (0.05, 0.3)
    assert cfg.train.epochs == 5


@pytest.mark.parametrize("override, named", [
    ("afs.dimz=[1,2,3,4]", "afs.dimz: unknown key"),
    ("sia.strength=[0.3,0.1]", "sia.strength"),
    ("train.epochs=0", "train.epochs"),
    ("afs.dims=[1,2]", "afs.dims"),
    ("bogus.key=1", "bogus: unknown key"),
    ("synthesis.delta=[0.5,1.5]", "synthesis.delta"),
])
def test_bad_keys_and_values_are_named(override, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[")):
        load_config("demo", [override])


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config("demo", ["afs.dims"])


def test_unknown_profile_is_named():
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_config("nope")


def test_texture_source_needs_a_root():
    with pytest.raises(ConfigError, match="texture_root"):
        load_config("demo", ["synthesis.source=texture"])


def test_runtime_is_not_part_of_any_stage_section():
    cfg = Config()
    for name in ("diffusion", "sia", "afs", "train", "evaluate"):
        assert "device" not in cfg.section(name)


def test_errors_blame_the_override_that_set_the_key_or_else_the_file(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("afs:\n  dimz: [8, 8, 8, 8]\n")
    with pytest.raises(ConfigError) as err:
        load_config(profile, ["sia.strength=[0.3,0.1]"])
    assert str(err.value) == (f"override sia.strength=[0.3, 0.1]: Value error, must be [min, max] with "
                              f"0 <= min <= max, got [0.3, 0.1]; {profile}: afs.dimz: unknown key")


@pytest.mark.parametrize("device", ["tpu", "cuda0", "gpu:1"])
def test_runtime_device_must_be_auto_cpu_or_cuda(device):
    with pytest.raises(ConfigError, match=rf"override runtime.device='{device}'.*must be auto, cpu, cuda or cuda:N"):
        load_config("demo", [f"runtime.device={device}"])
    assert load_config("demo", ["runtime.device=cuda:1"]).runtime.device == "cuda:1"


def test_a_path_that_is_not_yaml_is_not_taken_for_a_profile_name():
    with pytest.raises(ConfigError, match=r"config demo/README.txt: not a .yaml file"):
        load_config("demo/README.txt")


@pytest.mark.parametrize("override, key", [
    ("train.lr=.nan", "train.lr"), ("diffusion.lr=.inf", "diffusion.lr"), ("train.lr=nan", "train.lr"),
    ("sia.strength=[0.1,.inf]", "sia.strength"), ("synthesis.normal_fraction=.nan", "synthesis.normal_fraction"),
    ("evaluate.pro_fpr_limit=-.inf", "evaluate.pro_fpr_limit"),
])
def test_non_finite_values_are_config_errors_naming_the_key(override, key):
    # Before, a NaN learning rate passed validation and broke the run at train_realnet.
    with pytest.raises(ConfigError, match=re.escape(key)) as info:
        load_config("demo", [override])
    assert str(info.value).startswith("override ") and "finite number" in str(info.value)


def test_an_empty_profile_file_is_an_error_naming_it(tmp_path):
    for text in ("", "\n# only a comment\n"):
        path = tmp_path / "empty.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(f"{path}: the file is empty")):
            load_config(str(path))


def test_a_duplicated_key_is_an_error_naming_the_file_and_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  lr: 0.001\n  epochs: 3\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: key 'lr' appears twice (lines 2 and 4)")):
        load_config(str(path))
    path.write_text("train: {epochs: 3}\ndata: {image_size: 64}\ntrain: {epochs: 4}\n")
    with pytest.raises(ConfigError, match="key 'train' appears twice"):
        load_config(str(path))
    with pytest.raises(ConfigError, match=re.escape("override data.roots: key 'demo' appears twice")):
        load_config("demo", ["data.roots={demo: a, demo: b}"])
def test_method_defaults_to_realnet_and_is_set_on_its_own():
    assert load_config("demo").method == "realnet"
    assert load_config("demo", ["method=realnet"]).method == "realnet"
    with pytest.raises(ConfigError, match="must name a section"):
        load_config("demo", ["profile=x"])


@pytest.mark.parametrize("old, new", [("afs.backbone=resnet34", "backbone.name"),
                                      ("afs.backbone_weights=/w.pth", "backbone.weights")])
def test_a_moved_key_is_an_error_that_names_the_new_key(old, new):
    with pytest.raises(ConfigError, match=rf"override: {old.split('=')[0]} is now {new}"):
        load_config("demo", [old])


def test_an_old_config_file_with_a_moved_key_names_the_new_key(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("afs:\n  backbone: resnet34\n  dims: [8, 8, 8, 8]\n")
    with pytest.raises(ConfigError, match=rf"{old}: afs.backbone is now backbone.name"):
        load_config(old)
