"""Progress bars of the stages: live on a terminal, sparse in a log."""

from __future__ import annotations

import time

import torch

from realnet_core.config import load_config
from stages.common import StageContext


def test_progress_into_a_log_refreshes_every_30_s_not_every_update(capsys):
    ctx = StageContext(cfg=load_config("demo", ["runtime.progress=true"]), store=None, dataset="demo",
                       category="brick", ref=None, upstream={}, workdir=None, device=torch.device("cpu"))
    bar = ctx.progress(300, "train_diffusion", unit="step")  # stderr is captured here: not a terminal
    for step in range(300):  # 1.5 s: fifteen redraws at a terminal's 0.1 s
        time.sleep(0.005)
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)  # as the stages set it
    bar.close()
    writes = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    assert 1 <= len(writes) <= 3, writes  # the first draw and the final line
    assert "300/300" in writes[-1] and "loss=0.0033" in writes[-1]
