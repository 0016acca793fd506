"""The method registry: every detector, by the name ``method`` gives in the config.

Evaluate, predict, the tables, the paper comparison and the bench ask here; none of them names a method.
Adding one is a line below (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import torch

from realnet_core.config import Config, ConfigError
from stages.common import Detector, Method
from stages.methods import prn, realnet, simplenet
from storage.checkpoints import CheckpointError
from storage.store import StoreError, folder_damage

METHODS: dict[str, Method] = {m.name: m for m in (realnet.METHOD, simplenet.METHOD, prn.METHOD)}


def get(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method={name!r}: unknown method; methods: {', '.join(METHODS)}")
    return METHODS[name]


def of(cfg: Config) -> Method:
    """The method a config runs."""
    return get(cfg.method)


def owner(stage: str) -> Method | None:
    """The method whose own stage this is, or None for a shared stage."""
    return next((m for m in METHODS.values() if any(s.NAME == stage for s in m.stages)), None)


def load_detector(model: str | Path, device: torch.device, cfg: Config | None = None) -> Detector:
    """The detector of a model artifact folder or model file, whichever method wrote it.

    A file under another name is offered to each method in turn; each refuses a file that is not its own.
    """
    path = Path(model)
    if path.is_dir():
        damage = folder_damage(path)  # an artifact folder is used only whole (sizes from its manifest)
        if damage is not None:
            stage = path.parts[-4] if len(path.parts) >= 4 else "the stage that wrote it"
            raise StoreError(f"{damage}; rebuild it with `realnet run --rerun {stage}`")
        for method in METHODS.values():
            if (path / method.model_file).is_file():
                return method.load_detector(path, device, cfg)
        files = " or ".join(f"{m.model_stage} artifact ({m.model_file})" for m in METHODS.values())
        raise FileNotFoundError(f"no model at {model} (give a {files})")
    named = [m for m in METHODS.values() if path.name == m.model_file] or list(METHODS.values())
    errors = []
    for method in named:
        try:
            return method.load_detector(path, device, cfg)
        except CheckpointError as exc:
            errors.append(exc)
    raise errors[0] if len(errors) == 1 else CheckpointError("; ".join(map(str, errors)))


def paper_results(method: str) -> pd.DataFrame:
    """The per-category numbers (percent) of a method's paper, shipped beside its stages; empty if none."""
    m = get(method)
    if not m.paper_results:
        return pd.DataFrame(columns=["dataset", "category", "image_auroc", "pixel_auroc", "pro", "source"])
    package = m.stages[0].__name__.rpartition(".")[0]
    with resources.files(package).joinpath(m.paper_results).open() as f:
        return pd.read_csv(f, dtype={"category": str})
