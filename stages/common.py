"""What every stage shares: artifact keys, the cache check, locking, and finalising.

A stage module defines ``NAME``, ``VERSION``, ``TABLES`` (the Parquet tables it writes, for ``stages.tables``),
``MEMORY_HINT`` (the settings that shrink its GPU memory),
``FILES`` (the config keys naming files it reads, such as weights: ``fingerprint`` covers them and
``dag.check_inputs`` checks them before the first stage), ``key_config(cfg)``,
``fingerprint(cfg, dataset, category)`` and ``run(ctx) -> dict``. ``execute`` turns that into a cached,
locked, atomic artifact:

    key = hash(NAME, VERSION, key_config(cfg), upstream keys, data fingerprint)

so a config change reruns exactly the stages whose key it touches, and everything downstream of them
(their upstream keys change). ``run`` writes into ``ctx.workdir``, a persistent scratch folder that
survives a kill, so a rerun resumes from whatever checkpoint or shard the stage left there.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from realnet_core.config import Config
from realnet_core.features.backbones import build_backbone
from realnet_core.runtime import for_inference, resolve_device, set_cpu_threads
from storage.checkpoints import CheckpointError, load_checkpoint, load_state_into, save_checkpoint
from storage.errors import OutOfSpace
from storage.keys import artifact_key
from storage.space import describe, free_bytes, no_space_cause
from storage.store import ArtifactRef, Store, StoreError, folder_damage

DATASET_SCOPE = "_all"  # category slot of an artifact shared by a whole dataset


class StageOutOfMemory(RuntimeError):
    """A stage ran out of GPU memory; the message names the settings that make it need less."""


@dataclass
class StageContext:
    cfg: Config
    store: Store
    dataset: str
    category: str
    ref: ArtifactRef
    upstream: dict[str, ArtifactRef]
    workdir: Path
    device: torch.device
    extra: dict[str, Any] = field(default_factory=dict)

    def upstream_path(self, stage: str) -> str:
        """A local folder holding the upstream artifact (downloaded once for a remote root)."""
        if stage not in self.upstream:
            raise KeyError(f"{self.ref.stage} needs the {stage} artifact, which was not given")
        return str(self.store.local_copy(self.upstream[stage]))

    def progress(self, total: int, desc: str, unit: str = "it") -> tqdm:
        label = f"{self.dataset}/{self.category} {desc}"
        # Into a log file or a worker's log (no terminal), one line per 30 s instead of ten per second
        # (stages set their postfix with refresh=False, so that it waits for the next timed refresh).
        interactive = sys.stderr.isatty()
        bar = tqdm(total=total, desc=label, unit=unit, disable=not self.cfg.runtime.progress,
                   dynamic_ncols=True, leave=not interactive, mininterval=0.1 if interactive else 30)
        if not hasattr(bar, "initial"):  # a disabled tqdm skips most of __init__; stages read bar.initial
            bar.initial = bar.n
        return bar


@dataclass(frozen=True)
class StageResult:
    ref: ArtifactRef
    status: str  # "ran" or "reused"
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.ref.to_dict(), "status": self.status, "seconds": round(self.seconds, 3)}


# ---------------------------------------------------------------- resuming


def resume(path: Path, gen: torch.Generator, **modules: Any) -> dict[str, Any] | None:
    """The state a killed build saved at ``path``, loaded into ``modules`` (each under its own key, in
    order) and ``gen``; None when there is none, so the build starts fresh."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    for key, module in modules.items():
        module.load_state_dict(state[key])
    gen.set_state(state["rng"])
    return state


# ---------------------------------------------------------------- methods


class Detector(Protocol):
    """A trained model behind the method seam: what evaluate, predict and the bench call."""

    image_size: int  # the input size the model was trained at

    def anomaly_maps(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, H, W) anomaly maps at the input size, higher is more anomalous."""
        ...

    def score(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> ((B, H, W) anomaly maps, (B,) image scores), by the method's own rule
        for the image score (RealNet pools the map; SimpleNet takes its patch scores' max)."""
        ...


@dataclass(frozen=True)
class Method:
    """A detector, registered once in ``stages.methods``.

    ``stages`` are its own stage modules in order, the last one writing ``model_file``; ``upstream(stage, cfg)``
    names what each consumes (shared stages or its own); ``build_model`` is its factory from config to
    network; ``load_detector(model, device, cfg=None)`` turns its model artifact into a :class:`Detector`.
    ``paper_results`` is the CSV (beside its stages) of its paper's per-category numbers, in percent.
    For ``realnet bench`` (None: the bench has parts of its own for the method), on random weights at the
    config's sizes: ``bench_train_step(cfg, device) -> (step, info)``, a zero-argument call of one training step
    as the stage repeats it and facts about it (``batch``, ``params``); ``bench_detector(cfg, device)``, the
    :class:`Detector` as evaluate builds it.
    """

    name: str
    sections: tuple[str, ...]
    stages: tuple[ModuleType, ...]
    upstream: Any  # Callable[[str, Config], list[str]]
    build_model: Any  # Callable[..., torch.nn.Module]
    load_detector: Any  # Callable[[str | Path, torch.device, Config | None], Detector]
    model_file: str
    paper_results: str | None = None
    bench_train_step: Any = None  # Callable[[Config, torch.device], tuple[Callable[[], Any], dict[str, Any]]]
    bench_detector: Any = None  # Callable[[Config, torch.device], Detector]

    @property
    def model_stage(self) -> str:
        return self.stages[-1].NAME


def write_bundle(path: Path, kind: str, net: torch.nn.Module, backbone: str, backbone_weights: str | None,
                 image_size: int, **extra: Any) -> None:
    """A method's model file: its network (``config()`` and weights), the backbone that feeds it and the input
    size, under ``kind`` (what ``read_bundle`` checks), plus the method's ``extra`` entries."""
    save_checkpoint({"kind": kind, "model": net.config(), "state_dict": net.state_dict(), "backbone": backbone,
                     "backbone_weights": backbone_weights, "image_size": image_size, **extra}, path)


def open_bundle(model: str | Path, bundle: str, kind: str, label: str, stage: str, net_class: Any,
                device: torch.device) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """(backbone, network, checkpoint) of a ``write_bundle`` file, ready for inference on ``device``."""
    path, ckpt = read_bundle(model, bundle, kind, label, stage)
    net = net_class.from_config(ckpt["model"])
    load_state_into(net, ckpt["state_dict"], str(path))
    backbone = build_backbone(ckpt["backbone"], ckpt.get("backbone_weights"))
    return for_inference(backbone.to(device)), for_inference(net.to(device)), ckpt


def read_bundle(model: str | Path, bundle: str, kind: str, label: str, stage: str) -> tuple[Path, dict[str, Any]]:
    """A method's checkpoint from its model artifact folder (used only whole, sizes from its manifest) or its
    model file, checked to be ``kind``'s: (path, checkpoint dict)."""
    p = Path(model)
    damage = folder_damage(p if p.is_dir() else p.parent)
    if damage is not None:
        raise StoreError(f"{damage}; rebuild it with `realnet run --rerun {stage}`")
    path = p / bundle if p.is_dir() else p
    if not path.is_file():
        raise FileNotFoundError(f"no {label} checkpoint at {model} (give a {stage} artifact or {bundle})")
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise CheckpointError(f"{path}: not a {label} checkpoint (no 'kind: {kind}' entry)")
    return path, ckpt


# ---------------------------------------------------------------- keys


def stage_key(stage: ModuleType, cfg: Config, dataset: str, category: str,
              upstream: dict[str, ArtifactRef]) -> str:
    return artifact_key(
        stage.NAME,
        stage.VERSION,
        stage.key_config(cfg),
        {name: ref.key for name, ref in sorted(upstream.items())},
        stage.fingerprint(cfg, dataset, category),
    )


def stage_ref(stage: ModuleType, cfg: Config, store: Store, dataset: str, category: str,
              upstream: dict[str, ArtifactRef]) -> ArtifactRef:
    slot = DATASET_SCOPE if getattr(stage, "dataset_scoped", lambda c: False)(cfg) else category
    return store.ref(stage.NAME, dataset, slot, stage_key(stage, cfg, dataset, category, upstream))


# ---------------------------------------------------------------- execution


def execute(stage: ModuleType, cfg: Config, store: Store, dataset: str, category: str,
            upstream: dict[str, ArtifactRef] | None = None, *, force: bool = False,
            device: torch.device | str | None = None) -> StageResult:
    """Reuse the stage's artifact when its key exists, else build it under a lock."""
    upstream = dict(upstream or {})
    start = time.perf_counter()
    set_cpu_threads(cfg.runtime.threads)  # here, on the thread that computes: OpenMP counts are per thread
    ref = stage_ref(stage, cfg, store, dataset, category, upstream)
    if store.exists(ref) and not force:
        return StageResult(ref, "reused", time.perf_counter() - start)
    with store.lock(ref):
        # Another run may have finished the same key while we waited for the lock.
        if store.exists(ref) and not force:
            return StageResult(ref, "reused", time.perf_counter() - start)
        damage = store.damage(ref)
        if damage is not None:
            # Never read, and replaced as a whole when the rebuild publishes (Store.build moves it aside).
            print(f"realnet: warning: {damage}; rebuilding it", file=sys.stderr)
        if force:
            store.clear_scratch(ref)  # a forced rerun starts from zero, not from old checkpoints
        ctx = StageContext(
            cfg=cfg, store=store, dataset=dataset, category=category, ref=ref, upstream=upstream,
            workdir=store.scratch(ref),
            device=resolve_device(str(device) if device is not None else cfg.runtime.device),
        )
        try:
            meta = stage.run(ctx) or {}
        except torch.cuda.OutOfMemoryError as exc:
            raise StageOutOfMemory(
                f"{stage.NAME} {dataset}/{category} ran out of GPU memory on {ctx.device} "
                f"({str(exc).splitlines()[0]}); to need less, set {stage.MEMORY_HINT}. "
                "`realnet bench --part memory_model` models what a setting needs."
            ) from exc
        except Exception as exc:
            full = out_of_space(exc, stage.NAME, store, dataset, category, ctx.workdir)
            if full is None:
                raise
            raise full from exc
        meta.update(
            config=stage.key_config(cfg), version=stage.VERSION,
            upstream={name: r.to_dict() for name, r in upstream.items()},
            source_category=category,
        )
        if force:
            # Only now, with the rebuilt artifact complete in scratch: a failed forced rebuild keeps the old one.
            store.remove(ref)
        try:
            with store.build(ref, meta, from_scratch=True):
                pass
        except Exception as exc:
            full = out_of_space(exc, stage.NAME, store, dataset, category, ctx.workdir)
            if full is None:
                raise
            raise full from exc
    return StageResult(ref, "ran", time.perf_counter() - start)


def out_of_space(exc: BaseException, stage: str, store: Store, dataset: str, category: str,
                 workdir: Path) -> OutOfSpace | None:
    """The one-line error for a stage whose write failed for lack of space or quota (None for any other
    failure): it names the artifact root, the file and the bytes needed. Nothing is published, and the
    checkpoints the stage saved before stay in its scratch folder: they were replaced only by whole files."""
    cause = no_space_cause(exc, workdir)
    if cause is None:
        return None
    path = getattr(cause, "path", None) or getattr(cause, "filename", None)
    needed = getattr(cause, "needed", None)
    free = getattr(cause, "free", None)
    free = free if free is not None else free_bytes(path or workdir)
    return OutOfSpace(
        f"{stage} {dataset}/{category}: out of disk space under artifact root {store.root}: "
        f"{describe(path, needed, free)}; nothing was published and the last checkpoint in {workdir} is kept: "
        "free some space (or raise the quota) and rerun the same command to resume", path, needed, free)
