"""A stage that runs out of GPU memory says which settings make it need less, and publishes nothing."""

from __future__ import annotations

import re
import types

import pytest
import torch

from realnet_core.config import load_config
from stages import dag
from stages.common import StageOutOfMemory, execute, stage_ref
from storage.store import Store


def _stage_that_runs_out() -> types.ModuleType:
    mod = types.ModuleType("fake_train_realnet")
    mod.NAME, mod.VERSION, mod.MEMORY_HINT = "train_realnet", "fake-1", "a smaller train.batch_size"
    mod.key_config = lambda cfg: {}
    mod.fingerprint = lambda cfg, ds, cat: ""

    def run(ctx):
        (ctx.workdir / "epoch_3.pt").write_text("a checkpoint a rerun would resume from")
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore allocator detail")

    mod.run = run
    return mod


def test_out_of_memory_names_the_stage_and_the_settings_and_publishes_nothing(tmp_path):
    cfg, store, stage = load_config("demo"), Store(str(tmp_path)), _stage_that_runs_out()

    with pytest.raises(StageOutOfMemory) as err:
        execute(stage, cfg, store, "demo", "brick", device="cpu")

    message = str(err.value)
    assert message.startswith("train_realnet demo/brick ran out of GPU memory")
    assert "Tried to allocate 2.00 GiB" in message and "allocator detail" not in message  # one line
    assert "a smaller train.batch_size" in message
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)
    ref = stage_ref(stage, cfg, store, "demo", "brick", {})
    assert not store.exists(ref)
    assert (store.scratch(ref) / "epoch_3.pt").exists()  # kept for the rerun


@pytest.mark.parametrize("name", dag.ORDER)
def test_every_stage_names_real_settings_that_shrink_its_memory(name):
    cfg = load_config("demo")
    keys = re.findall(r"\b[a-z_]+\.[a-z_]+\b", dag.MODULES[name].MEMORY_HINT)

    assert keys, "no setting named"
    for key in keys:
        section, field = key.split(".")
        assert hasattr(getattr(cfg, section), field), key
