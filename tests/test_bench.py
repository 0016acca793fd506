"""``realnet bench`` on a CPU: every part runs and reports positive, finite numbers."""

from __future__ import annotations

import math

import pytest
import torch

from flows.bench.run import METRICS, PARTS, run_bench
from stages import methods

# Shrink every size so that the whole run takes seconds on two CPU cores.
TINY = [
    "data.image_size=64", "sia.batch_size=2", "sia.sampling_steps=2", "diffusion.batch_size=2",
    "afs.batch_size=2", "train.batch_size=2", "evaluate.batch_size=2", "prn.batch_size=4",
    "afs.dims=[16,24,48,96]",  # at 64 px layer 4 is 1x1: its reconstruction UNet needs 2+ channels per norm group
]
# The cached rerun runs the whole demo pipeline twice (a minute on a CPU): left to `realnet bench`. The export
# part's two exports take as long: tests/export/test_export_bench.py runs it alone.
FAST_PARTS = [p for p in PARTS if p not in ("cached_rerun", "export")]


@pytest.fixture
def one_thread():
    # This test checks the plumbing, not the speed: on two cores shared with other jobs, two torch threads
    # wait on each other (8x slower than one thread here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bench_quick_reports_every_metric(one_thread):
    result = run_bench("demo", device="cpu", quick=True, overrides=TINY, parts=FAST_PARTS)

    assert result["errors"] == {}
    keys = [k for part in FAST_PARTS for k in METRICS[part]]
    keys += ["peak_rss_mb", "bench_seconds", "diffusion_unet_params", "realnet_train_params", "backbone_params",
             "sia_gflop_per_forward", "sia_achieved_tflops", "inference_gflop_per_image"]
    keys += [f"{part}_wall_s" for part in FAST_PARTS]  # each part's whole time, warm-up and compile included
    for key in keys:
        value = result[key]
        assert isinstance(value, int | float) and math.isfinite(value) and value > 0, (key, value)
    assert result["peak_cuda_mb"] is None  # no GPU here
    assert result["profile"] == "demo" and result["device"] == "cpu" and result["torch_version"]


def test_bench_rejects_unknown_part():
    with pytest.raises(ValueError, match="unknown bench part"):
        run_bench("demo", device="cpu", parts=["nope"])


def test_bench_trace_writes_a_trace_and_op_table_per_timed_loop(one_thread, tmp_path):
    import json

    import pandas as pd

    result = run_bench("demo", device="cpu", quick=True, overrides=TINY, parts=["afs", "inference"],
                       trace_dir=tmp_path)

    assert result["errors"] == {}
    for label in ("afs", "inference_batch1", "inference_batched"):
        ops = pd.read_csv(tmp_path / f"{label}.ops.csv")
        assert {"op", "calls", "self_cpu_ms", "self_device_ms"} <= set(ops.columns)
        assert ops["self_cpu_ms"].is_monotonic_decreasing and (ops["calls"] > 0).all()
        assert any("conv" in op for op in ops["op"])  # the backbone's convolutions are in there
        events = json.loads((tmp_path / f"{label}.trace.json").read_text())["traceEvents"]
        assert len(events) > 10
        assert 0 < result[f"{label}_trace_device_busy_fraction"] <= 1
        assert 0 < result[f"{label}_trace_matmul_conv_share"] <= 1
        assert result[f"{label}_trace_wall_ms"] > 0 and "%" in result[f"{label}_trace_top_ops"]
    assert not any(k.startswith("sia_trace") for k in result)  # only the parts that ran


@pytest.mark.parametrize("back_to_back, waits", [(False, 1 + 4), (True, 1 + 1)])
def test_throughput_timing_waits_for_the_device_only_at_the_window_ends(monkeypatch, back_to_back, waits):
    # A stage queues its steps without waiting; timing each step alone would charge it a restart gap.
    from flows.bench import parts as bench_parts

    calls, syncs = [], []
    monkeypatch.setattr(bench_parts, "sync", lambda device: syncs.append(len(calls)))
    seconds = bench_parts.time_per_iter(lambda: calls.append(1), torch.device("cpu"),
                                        bench_parts.Budget(1, 4, 4, 0.0), back_to_back=back_to_back)
    assert len(calls) == 1 + 4 and len(syncs) == waits
    assert syncs[0] == 1 and syncs[-1] == 5  # after the warm-up call, and after the last timed one
    assert seconds >= 0.0


def test_bench_command_exits_non_zero_when_a_part_fails(monkeypatch, capsys):
    from flows.bench import run as bench
    from flows.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setitem(bench.BENCHES, "roofline", broken)
    assert main(["bench", "--profile", "demo", "--device", "cpu", "--part", "roofline", "--json"]) == 1
    out, err = capsys.readouterr()
    assert "simulated failure" in out and "bench part(s) failed: roofline" in err
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    help_text = capsys.readouterr().out
    own = {f"{m}_{kind}" for m in methods.METHODS for kind in ("train", "inference")}
    assert all(part in help_text for part in set(PARTS) - own), "bench --help must list every shared part"
    assert "<method>_train" in help_text and "<method>_inference" in help_text
    assert own <= set(PARTS), "every method's own parts are bench parts"
