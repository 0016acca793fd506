"""Typed pipeline configuration: one pydantic section per stage, validated on load.

A profile is a YAML file (``configs/demo.yaml``, ``configs/paper.yaml``) plus ``section.key=value``
overrides. Every error names the offending key, e.g. ``afs.dimz`` or ``sia.strength``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """A profile, override or value that cannot be used; the message names the key."""


class _Section(BaseModel):
    # Unknown keys are errors: a typo such as ``afs.dimz`` must never be silently ignored.
    # NaN and infinity are errors too: a non-finite learning rate passes `gt=0` checks as "not comparable"
    # and would break training hours later.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ---------------------------------------------------------------- sections


class FolderSpec(_Section):
    """Plain folders of one category of the ``folder`` dataset (realnet_core.data.folders)."""

    normal: str = Field(description="normal images (required): the training images")
    abnormal: str | None = Field(None, description="anomalous test images")
    masks: str | None = Field(None, description="masks of the abnormal images, matched by file stem")
    normal_test: str | None = Field(None, description="normal test images; without, data.test_fraction of normal")


class ForegroundSpec(_Section):
    """A custom foreground rule: threshold one channel, keep the bright or dark side, close then open."""

    channel: Literal["gray", "red", "green", "blue"] = "gray"
    method: Literal["otsu", "triangle"] = "otsu"
    foreground: Literal["bright", "dark"] = "bright"
    close: int = Field(0, ge=0, le=64, description="side of the closing's square, 0 = none")
    open: int = Field(0, ge=0, le=64, description="side of the opening's square, 0 = none")


class DataConfig(_Section):
    dataset: str = "demo"
    roots: dict[str, str] = Field(default_factory=lambda: {"demo": "demo_data"})
    categories: list[str] = Field(default_factory=list, description="empty: every category of the dataset")
    image_size: int = Field(256, ge=16, le=1024)
    # The decision threshold is set on these held-back normal training images, never on the test set.
    val_fraction: float = Field(0.1, ge=0, lt=1, description="seeded share of the training images kept for "
                                "the threshold, never trained on")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="folder data without normal test images: seeded "
                                 "share of the normal images held out for testing")
    split_seed: int = 0
    folders: dict[str, FolderSpec] = Field(default_factory=dict, description="plain folders by category name "
                                           "(dataset folder)")
    foreground: dict[str, str | ForegroundSpec] = Field(
        default_factory=dict, description="per category: whole, a built-in category's rule by name "
        "(bottle or mvtec/bottle), or a custom rule; default: the built-in rule, the whole image for new data")

    @field_validator("folders", "foreground")
    @classmethod
    def _safe_names(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from realnet_core.data.errors import DatasetError
        from realnet_core.data.registry import check_name

        for name in v:
            try:
                check_name("folder", name)
            except DatasetError as exc:
                raise ValueError(f"data.{info.field_name}: {exc}") from None
        return v

    @field_validator("foreground")
    @classmethod
    def _known_rules(cls, v: dict[str, Any]) -> dict[str, Any]:
        from realnet_core.synthesis.foreground import rule_by_name

        for name, rule in v.items():
            if isinstance(rule, str):
                try:
                    rule_by_name(rule)
                except ValueError as exc:
                    raise ValueError(f"data.foreground.{name}: {exc}") from None
        return v
    # Real anomalous images a method may train on (PRN's 10, the DRA protocol): a seeded selection from the
    # test set, removed from the test set that evaluate scores (stages.inputs.category_split).
    seen_anomalies: int = Field(0, ge=0, description="anomalous test images held out as seen anomalies")
    seen_seed: int = 0


class DiffusionConfig(_Section):
    scope: Literal["category", "dataset"] = "category"
    image_size: int = Field(256, ge=8, le=512)
    num_channels: int = Field(256, ge=32, multiple_of=32, description="GroupNorm32 needs a multiple of 32")
    num_res_blocks: int = Field(2, ge=1)
    channel_mult: list[int] | None = None
    attention_resolutions: list[int] = Field(default_factory=lambda: [32, 16, 8])
    num_head_channels: int = 64
    noise_schedule: Literal["linear", "cosine"] = "linear"
    diffusion_steps: int = Field(1000, ge=10)
    init_checkpoint: str | None = None
    # A colour prior for small models trained for minutes: centre the images on the training set's mean
    # colour, and clip each denoised prediction to the training set's colour range instead of [-1, 1].
    # Without it an under-trained model drifts into saturated flat colours at high noise levels.
    # Off for the paper profile, whose ImageNet initialisation expects plain [-1, 1] images.
    color_prior: bool = False
    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    steps: int = Field(20000, ge=1)
    ema_rate: float = Field(0.9999, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(1000, ge=1)
    sample_steps: int = Field(20, ge=1)
    seed: int = 0


class SIAConfig(_Section):
    num_images: int = Field(10000, ge=1)
    batch_size: int = Field(64, ge=1)
    strength: tuple[float, float] = (0.1, 0.2)
    sampling_steps: int = Field(20, ge=1)
    ddim: bool = False
    shard_images: int = Field(256, ge=1)
    guidance_scale: float = Field(0.0, ge=0)
    classifier_checkpoint: str | None = None
    # Move the SIA's pooled per-channel mean and spread onto the training images' (realnet_core.synthesis.tones),
    # for small models trained for minutes, whose samples come out brighter and flatter. Off for the paper profile.
    match_tones: bool = False
    seed: int = 0

    @field_validator("strength")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"must be [min, max] with 0 <= min <= max, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _guidance_needs_classifier(self) -> SIAConfig:
        if self.guidance_scale > 0 and not self.classifier_checkpoint:
            raise ValueError("sia.guidance_scale > 0 needs sia.classifier_checkpoint (a guided-diffusion classifier)")
        return self


class SynthesisConfig(_Section):
    source: Literal["sia", "texture", "cutpaste"] = "sia"
    texture_root: str | None = None
    normal_fraction: float = Field(0.5, ge=0, le=1)
    delta: tuple[float, float] = (0.5, 1.0)
    perlin_scale_exp: tuple[int, int] = (0, 6)
    use_foreground: bool = True
    sia_augment: float = Field(0.0, ge=0, le=1, description="share of the SIA train_realnet draws that go through "
                               "DRAEM's augmentation, which the paper applies to DTD textures only; 0: none (paper)")
    self_augment: float = Field(0.0, ge=0, le=1, description="share of train_realnet's training rows whose anomaly "
                                "source is the row's own image through DRAEM's augmentation instead of the source's; "
                                "0: none (paper)")
    shade: float = Field(0.0, ge=0, le=1, description="share of train_realnet's training rows whose anomaly source "
                         "is the row's own image darkened to 10-50%: holes and pits; 0: none (paper)")

    @field_validator("delta")
    @classmethod
    def _delta(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"must be [min, max] inside [0, 1], got {list(v)}")
        return v

    @model_validator(mode="after")
    def _texture_needs_root(self) -> SynthesisConfig:
        if self.source == "texture" and not self.texture_root:
            raise ValueError("source 'texture' needs synthesis.texture_root")
        return self


class BackboneConfig(_Section):
    """The frozen feature extractor every method shares."""

    name: Literal["wide_resnet50_2", "resnet18", "resnet34", "resnet50", "efficientnet_lite0"] = "wide_resnet50_2"
    weights: str | None = None


class AFSConfig(_Section):
    dims: list[int] = Field(default_factory=lambda: [256, 512, 512, 256])
    batches: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    seed: int = 0

    @field_validator("dims")
    @classmethod
    def _four_layers(cls, v: list[int]) -> list[int]:
        if len(v) != 4 or min(v) < 1:
            raise ValueError(f"needs four positive channel counts (one per layer), got {v}")
        return v


class TrainConfig(_Section):
    epochs: int = Field(1000, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    rrs_ratio: float = Field(1 / 3, gt=0, le=1)
    recon_channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 4])
    recon_res_blocks: int = Field(2, ge=1)
    disc_hidden: int = Field(128, ge=2, description="discriminator width after its residual units (the authors' 128)")
    disc_min_width: int = Field(4, ge=1, description="the narrowest of the discriminator's later convs: the "
                                "authors' 4 (2 at disc_hidden 64 before)")
    disc_leak: float = Field(0.0, ge=0, lt=1, description="negative slope of the discriminator's activations after "
                             "its BatchNorm; 0: the authors' ReLU, whose narrow layers can die whole in training")
    rrs_input: Literal["raw", "normed", "paired"] = Field(
        "raw", description="what RRS hands the discriminator: the raw residuals (the authors' code), the "
        "BatchNorm-normalised ones, or each pick both ways (paired)")
    checkpoint_every: int = Field(50, ge=1, description="epochs")
    feature_cache_mb: int = Field(2048, ge=0, description="backbone features of the training images kept; 0: none")
    ema_rate: float | None = Field(None, gt=0, lt=1, description="save an exponential moving average of the "
                                   "weights at this rate instead of the last step's; None: the last step's (paper)")
    seed: int = 0


class PRNConfig(_Section):
    """PRN (CVPR 2023, stages/methods/prn): prototypes, network and training; defaults are the paper's (sec. 4.1)."""

    prototype_ratio: float = Field(0.1, gt=0, le=1, description="K = this share of the normal training images")
    kmeans_max_iter: int = Field(300, ge=1)
    heads: int = Field(4, ge=1, le=8, description="MSA heads: patch sizes h, h/2, h/4, ...")
    msa_layers: int = Field(3, ge=1)
    epochs: int = Field(700, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="None: the normal images once per epoch")
    batch_size: int = Field(64, ge=4, description="half normal, a quarter extended, a quarter simulated")
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    focal_weight: float = Field(5.0, ge=0)
    focal_alpha: float = Field(0.5, ge=0, le=1)
    focal_gamma: float = Field(4.0, ge=0)
    beta: tuple[float, float] = (0.0, 0.8)
    texture_root: str | None = Field(None, description="DTD-style textures for HEA; None: HOA only")
    top_k: int = Field(100, ge=1, description="image score: mean of the top_k highest pixels")
    checkpoint_every: int = Field(50, ge=1, description="epochs")
    seed: int = 0

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError(f"must be [min, max] inside [0, 1], got {list(v)}")
        return v


class SimpleNetConfig(_Section):
    """SimpleNet (Liu et al., CVPR 2023) with the authors' code's settings (run.sh): layer2 and layer3,
    3 x 3 neighbourhoods pooled to 1536, noise std 0.015, margin 0.5, 40 meta-epochs x 4 = 160 epochs."""

    image_size: int | None = Field(None, ge=16, le=1024, description="None: data.image_size")
    layers: list[int] = Field(default_factory=lambda: [2, 3], description="backbone layers, 1-based")
    patch_size: int = Field(3, ge=1, description="odd: the neighbourhood is centred on each position")
    pretrain_embed_dimension: int = Field(1536, ge=1, description="each layer's neighbourhood pooled to")
    target_embed_dimension: int = Field(1536, ge=1, description="the layers stacked and pooled to")
    adaptor_bias: bool = Field(True, description="the code's adaptor has a bias; the paper's has none")
    dsc_hidden: int = Field(1024, ge=1)
    noise_std: float = Field(0.015, gt=0)
    margin: float = Field(0.5, gt=0)
    dsc_lr: float = Field(2e-4, gt=0, description="Adam")
    dsc_weight_decay: float = Field(1e-5, ge=0)
    adaptor_lr: float = Field(1e-4, gt=0, description="AdamW (weight decay 0.01), as the code")
    epochs: int = Field(160, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="None: one pass over the training images")
    batch_size: int = Field(8, ge=1)
    sigma: float = Field(4.0, ge=0, description="Gaussian filter of the upsampled map, in pixels")
    checkpoint_every: int = Field(20, ge=1, description="epochs")
    seed: int = 0

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int]) -> list[int]:
        if not v or any(layer not in (1, 2, 3, 4) for layer in v) or v != sorted(set(v)):
            raise ValueError(f"needs distinct backbone layers among 1, 2, 3, 4 (shallowest first), got {v}")
        return v

    @field_validator("patch_size")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v


class EvaluateConfig(_Section):
    batch_size: int = Field(16, ge=1)
    pool_size: int = Field(16, ge=1)
    pro_fpr_limit: float = Field(0.3, gt=0, le=1)
    overlays: int = Field(8, ge=0)
    target_fpr: float = Field(0.01, gt=0, lt=1, description="false-positive rate on the validation images that "
                              "sets the image and pixel thresholds")


class RuntimeConfig(_Section):
    """How to run, never what to compute: no runtime value enters an artifact key."""

    device: str = Field("auto", description="auto (every GPU, else the CPU), cpu, cuda or cuda:N")
    bf16: bool = True
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune"] = "default"
    cudnn_benchmark: bool = Field(
        False, description="let cuDNN time its convolution algorithms per shape: fixed-shape loops may run "
        "faster, results are no longer bitwise repeatable on a GPU")
    grad_checkpoint: bool = Field(
        False, description="diffusion training recomputes each UNet block's activations in the backward pass "
        "instead of keeping them: much less GPU memory for about a third more time")
    progress: bool = True
    task_runner: Literal["threads", "ray"] = "threads"
    ray_address: str | None = None
    gpus: int | None = Field(None, ge=0, description="None: every visible CUDA device")
    loader_workers: int = Field(0, ge=0, description="processes that read training and test images ahead")
    threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads per stage: auto is every core this process may use (never fewer "
        "under load, so that results do not depend on it)")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"must be auto or a whole number of threads, 1 or more, got {v!r}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from realnet_core.runtime import DEVICE_NAMES, parse_device

        try:
            parse_device(v)
        except ValueError:
            raise ValueError(f"must be {DEVICE_NAMES}, got {v!r}") from None
        return v


class Config(_Section):
    profile: str = "custom"
    method: str = Field("realnet", min_length=1, description="the detector: stages.methods.METHODS names them")
    data: DataConfig = Field(default_factory=DataConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    sia: SIAConfig = Field(default_factory=SIAConfig)
    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig)
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    afs: AFSConfig = Field(default_factory=AFSConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    prn: PRNConfig = Field(default_factory=PRNConfig)
    simplenet: SimpleNetConfig = Field(default_factory=SimpleNetConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @model_validator(mode="after")
    def _guidance_needs_classes(self) -> Config:
        if self.sia.guidance_scale > 0 and self.diffusion.scope != "dataset":
            raise ValueError("sia.guidance_scale > 0 needs diffusion.scope=dataset: the classifier steers a "
                             "class-conditional model towards one category, and a per-category model has no classes")
        return self

    def section(self, name: str, exclude: set[str] | None = None) -> dict[str, Any]:
        """A section as plain JSON-able data, the form that goes into artifact keys, less ``exclude``."""
        return getattr(self, name).model_dump(mode="json", exclude=exclude)


# ---------------------------------------------------------------- loading

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def profile_path(profile: str | Path) -> Path:
    """A profile name (``demo``, ``paper``) or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    if len(p.parts) > 1 or p.suffix:
        raise ConfigError(f"config {profile}: not a .yaml file (give a profile name such as demo or paper, "
                          "or a .yaml path)")
    for base in (Path.cwd() / "configs", CONFIG_DIR):
        if (base / f"{profile}.yaml").is_file():
            return base / f"{profile}.yaml"
    raise ConfigError(f"unknown profile {profile!r}: no configs/{profile}.yaml (give a name or a .yaml path)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"key {key!r} appears twice (lines {seen[key]} and {line}); give it once")
        seen[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(text: str) -> Any:
    """YAML as ``yaml.safe_load`` reads it, except that a duplicated key is a ConfigError naming it."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
# Keys set on their own, without a section.
TOP_LEVEL_KEYS = ("method",)
# Keys that moved: an old config file gets an error that names the new key, never a silent default.
MOVED_KEYS = {"afs.backbone": "backbone.name", "afs.backbone_weights": "backbone.weights"}


def parse_override(item: str) -> tuple[list[str], Any]:
    """``afs.dims=[128,256,256,128]`` -> (["afs", "dims"], [128, 256, 256, 128]) with YAML value parsing."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if len(path) < 2 and not (len(path) == 1 and path[0] in TOP_LEVEL_KEYS):
        raise ConfigError(f"override {item!r} must name a section and a key, e.g. afs.dims=...")
    try:
        value = parse_yaml(raw) if raw.strip() else None
    except ConfigError as exc:
        raise ConfigError(f"override {key}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {exc}") from exc
    return path, value


def _apply(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {'.'.join(path)}: {part} is not a section")
    node[path[-1]] = value


def _describe(err: Any, source: str, overridden: list[list[str]]) -> str:
    """One validation error, blamed on the override that set the key, else on the profile file."""
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if not key or err["type"] == "value_error" and isinstance(err.get("input"), dict):
        text = ": " + err["msg"].removeprefix("Value error, ")  # a rule across keys: its message names them
    elif err["type"] == "extra_forbidden":
        text = f" {key}: unknown key"
    else:
        text = f" {key}={err.get('input')!r}: {err['msg']}"
    if not loc and overridden:  # a rule across sections: the file and the overrides together broke it
        return f"{source} with its overrides{text}"
    # The override set this key, a section holding it, or a value inside it (loc `sia.strength.1`).
    from_override = any(path[: len(loc)] == loc or loc[: len(path)] == path for path in overridden)
    return f"override{text}" if from_override else f"{source}:{text.removeprefix(':')}"


def _check_moved(tree: dict[str, Any], source: str, overridden: list[list[str]]) -> None:
    moved = []
    for old, new in MOVED_KEYS.items():
        section, key = old.split(".")
        if isinstance(tree.get(section), dict) and key in tree[section]:
            where = "override" if old.split(".") in overridden else source
            moved.append(f"{where}: {old} is now {new}")
    if moved:
        raise ConfigError("; ".join(moved))


def build_config(tree: dict[str, Any], overrides: list[str] | None = None, source: str = "config") -> Config:
    tree = dict(tree or {})
    overridden = []
    for item in overrides or []:
        path, value = parse_override(item)
        _apply(tree, path, value)
        overridden.append(path)
    _check_moved(tree, source, overridden)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("; ".join(_describe(err, source, overridden) for err in exc.errors())) from None


def load_config(profile: str | Path = "demo", overrides: list[str] | None = None) -> Config:
    """Load a profile and apply overrides; raise ConfigError naming any bad key or value."""
    path = profile_path(profile)
    try:
        tree = parse_yaml(path.read_text())
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if tree is None:
        # Not the defaults: an empty profile is almost always a file cut short or saved blank by mistake.
        raise ConfigError(f"{path}: the file is empty (no sections); give at least one section, "
                          "e.g. `data: {dataset: demo}`, or use a profile such as demo")
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    tree.setdefault("profile", path.stem)
    return build_config(tree, overrides, source=str(path))
