"""The stage graph: which stages a config needs and what each one consumes.

The shared stages (train_diffusion, generate_sia, calibrate, evaluate) frame the stages of the config's method,
which ``stages.methods`` registers with their upstreams: calibrate (the decision thresholds) consumes the
method's model stage, and evaluate consumes both.
"""

from __future__ import annotations

from types import ModuleType

from realnet_core.config import Config, ConfigError
from realnet_core.data.check import check_test_files
from realnet_core.features.backbones import backbone_channels, weights_file
from stages import calibrate, evaluate, generate_sia, methods, train_diffusion
from stages.inputs import category_split, check_config_files

MODULES: dict[str, ModuleType] = {
    m.NAME: m for m in (train_diffusion, generate_sia,
                        *(s for method in methods.METHODS.values() for s in method.stages), calibrate,
                        evaluate)
}
ORDER = list(MODULES)


def active(cfg: Config) -> list[str]:
    """The stages evaluate needs, through the upstreams: the method's own and the shared stages they read
    (the diffusion stages only for a method that reads SIA, and only when the anomaly source is SIA)."""
    needed, todo = set(), ["evaluate"]
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(upstream(stage, cfg))
    return [s for s in ORDER if s in needed]


def upstream(stage: str, cfg: Config) -> list[str]:
    method = methods.owner(stage)
    if method is not None:
        return method.upstream(stage, cfg)
    model = methods.of(cfg).model_stage
    return {"train_diffusion": [], "generate_sia": ["train_diffusion"], "calibrate": [model],
            "evaluate": [model, "calibrate"]}[stage]


def downstream_closure(stages: list[str], cfg: Config) -> set[str]:
    """The given stages and everything that consumes them, for ``--rerun``."""
    unknown = [s for s in stages if s not in MODULES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; stages are: {', '.join(ORDER)}")
    out = set(stages)
    for s in active(cfg):
        if any(u in out for u in upstream(s, cfg)):
            out.add(s)
    return out & set(active(cfg))


def check_inputs(cfg: Config, targets: list[tuple[str, str]] | None = None) -> None:
    """Every file the active stages read besides the dataset exists: the weights and folders the config
    names, and the backbone's default weights; settings that only fail together (``check_settings``); and
    the test set of every target category (``check_test_files``: evaluate reads it last). Checked before
    the first stage, so that a mistake costs seconds rather than the hours of diffusion training and SIA
    before the stage that reads it. One bad category stops the whole run, before anything is built.
    """
    for stage in active(cfg):
        check_config_files(cfg, MODULES[stage].FILES)
    weights_file(cfg.backbone.name, cfg.backbone.weights)
    check_settings(cfg)
    for dataset, category in targets or []:
        # Evaluate, the last stage, reads the test set: a broken one must fail before the first stage,
        # whichever stage that is (select_features for the texture and CutPaste sources).
        check_test_files(category_split(cfg, dataset, category))


def check_settings(cfg: Config) -> None:
    """Values that validation accepts alone but a later stage cannot use with the rest of the config."""
    # select_features (stage 3, after diffusion training and SIA) keeps afs.dims[k] channels of layer k.
    if "select_features" not in active(cfg):
        return
    channels = backbone_channels(cfg.backbone.name)
    too_many = [f"layer{k + 1} has {c}" for k, (m, c) in enumerate(zip(cfg.afs.dims, channels, strict=True)) if m > c]
    if too_many:
        raise ConfigError(f"afs.dims={cfg.afs.dims}: more channels than {cfg.backbone.name} has "
                          f"({', '.join(too_many)}); give at most {list(channels)}")
