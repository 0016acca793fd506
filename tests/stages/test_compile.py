"""runtime.compile: the stages' networks go through torch.compile, and what they compute is unchanged.

Inductor needs minutes per network on this CPU, so the compiler backend here only records the graphs
Dynamo captured and runs them as they are: the test checks capture (no silent eager fallback) and
the wiring, not the generated kernels, which BENCHMARKS.md measures on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch


def test_compiled_training_and_evaluation_capture_graphs_and_match_eager(pipeline_run, tiny_cfg, rerun_on_a_copy,
                                                                         monkeypatch):
    import torch._dynamo

    graphs: list[int] = []

    def recording_backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: real_compile(module, backend=recording_backend))
    torch._dynamo.reset()

    _, results = pipeline_run
    cfg = tiny_cfg.model_copy(update={"runtime": tiny_cfg.runtime.model_copy(update={"compile": True})})
    again = rerun_on_a_copy(cfg, {"train_diffusion", "select_features", "train_realnet", "evaluate"})
    torch._dynamo.reset()

    assert len(graphs) >= 4 and max(graphs) > 50  # the UNet, backbone and RealNet were captured, not skipped
    ema = [torch.load(Path(r["train_diffusion"].ref.path) / "ema.pt", weights_only=True)["ema"]
           for r in (results, again)]
    assert all(torch.allclose(ema[0][k].float(), ema[1][k].float(), atol=1e-5) for k in ema[0])
    afs = [pd.read_parquet(Path(r["select_features"].ref.path) / "afs.parquet") for r in (results, again)]
    pd.testing.assert_frame_equal(afs[0], afs[1])
    old, new = (torch.load(Path(r["train_realnet"].ref.path) / "realnet.pt", weights_only=True)["state_dict"]
                for r in (results, again))
    assert all(torch.allclose(old[k].float(), new[k].float(), atol=1e-5) for k in old)
    scores = [pd.read_parquet(Path(r["evaluate"].ref.path) / "scores.parquet") for r in (results, again)]
    pd.testing.assert_frame_equal(scores[0], scores[1], atol=1e-5)


def test_cudnn_benchmark_follows_the_runtime_config(tiny_cfg, monkeypatch):
    from realnet_core.runtime import accelerate

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    net = torch.nn.Conv2d(1, 1, 1)
    on = tiny_cfg.model_copy(update={"runtime": tiny_cfg.runtime.model_copy(update={"cudnn_benchmark": True})})
    assert accelerate(net, on, torch.device("cpu")) is net  # compile off: the module itself
    assert torch.backends.cudnn.benchmark is True
    accelerate(net, tiny_cfg, torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False  # the default: bitwise repeatable GPU results


def test_grad_checkpoint_trains_the_same_diffusion_model_under_the_same_key(pipeline_run, tiny_cfg, rerun_on_a_copy,
                                                                            monkeypatch):
    from realnet_core.diffusion import unet

    _, results = pipeline_run
    cfg = tiny_cfg.model_copy(update={"runtime": tiny_cfg.runtime.model_copy(update={"grad_checkpoint": True})})
    calls, real = [], unet.checkpoint
    monkeypatch.setattr(unet, "checkpoint", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = rerun_on_a_copy(cfg, {"train_diffusion"})
    assert calls  # the blocks really recomputed their activations
    assert again["train_diffusion"].ref.key == results["train_diffusion"].ref.key
    ema = [torch.load(Path(r["train_diffusion"].ref.path) / "ema.pt", weights_only=True)["ema"]
           for r in (results, again)]
    assert all(torch.allclose(ema[0][k].float(), ema[1][k].float(), atol=1e-5) for k in ema[0])
