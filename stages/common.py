"""What every stage shares: artifact keys, the cache check, locking, and finalising.

A stage module defines ``NAME``, ``VERSION``, ``MEMORY_HINT`` (the settings that shrink its GPU memory),
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

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from tqdm.auto import tqdm

from realnet_core.config import Config
from realnet_core.devices import set_cpu_threads
from storage.errors import OutOfSpace
from storage.keys import artifact_key
from storage.space import describe, free_bytes, no_space_cause
from storage.store import ArtifactRef, Store

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


# ---------------------------------------------------------------- devices


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"runtime.device={name!r} but no CUDA device is visible")
    return device


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU only: on CPU it is slower than float32 and changes results."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def for_inference(module: torch.nn.Module) -> torch.nn.Module:
    """Evaluation mode, and no weight asks for a gradient (gradients with respect to inputs still flow).

    Autocast keeps a bf16 copy of every float32 weight that requires grad until its region ends, under
    ``torch.no_grad()`` too: one batch-1 call of the paper-size RealNet held 1 GB of copies on top of its
    2.2 GB of weights (BENCHMARKS.md, the memory model).
    """
    return module.eval().requires_grad_(False)


def accelerate(module: torch.nn.Module, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The module to call in a hot loop: compiled when ``runtime.compile`` is set, else itself.

    On a GPU it also goes channels_last, which pays only together with compile: alone it made SDAS
    slower on an H100 (eager GroupNorm in NHWC), compiled it doubled it (BENCHMARKS.md). The returned
    module shares the parameters: train, save and load through the original.
    """
    # Process-wide, so set at every call: stages of one run share the runtime config.
    torch.backends.cudnn.benchmark = cfg.runtime.cudnn_benchmark
    if not cfg.runtime.compile:
        return module
    import torch._dynamo as dynamo

    # An optimisation must never fail a stage: what the compiler cannot handle runs eagerly instead.
    dynamo.config.suppress_errors = True
    if device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return torch.compile(module, mode=cfg.runtime.compile_mode)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed from a base seed and names, so categories and stages draw independent streams."""
    import hashlib

    digest = hashlib.sha256(":".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_generator(seed: int, *parts: str, device: torch.device | str = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(derive_seed(seed, *parts))
    return gen


@contextlib.contextmanager
def seeded_init(seed: int, *parts: str) -> Iterator[None]:
    """Seed torch's global RNG, which layer initialisers draw from, and restore it afterwards.

    Without it, two builds of the same artifact key start from different random weights.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *parts))
        yield


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
