"""A roofline model of one forward pass: what bounds it, FLOPs or memory traffic, computed without a GPU.

The forward runs on the meta device (shapes only, no compute, seconds on a CPU). Every aten op it
dispatches is recorded with its FLOPs (torch's own FLOP formulas) and the bytes it reads and writes,
and each op is charged ``max(flops / peak, bytes / bandwidth)``, the least time any kernel for it could
take. Summed over the ops, as eager PyTorch runs them (one kernel each), that is the eager bound.
Counting only the FLOP-carrying ops (convolutions, matmuls, attention), as if every normalisation,
activation and copy were fused into them for free, gives the ceiling that no schedule can beat.
Launch overhead is not modelled: these are bounds, not predictions.

Attention is charged as a fused kernel (FlashAttention: reads q, k and v, writes the output), as
``scaled_dot_product_attention`` runs on a GPU, not as the unfused path the meta device would take.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from realnet_core.config import Config

# Ceilings of an NVIDIA H200 (BENCHMARKS.md, 2026-10-28): a bf16 8192^3 matrix product on random data,
# and a device-to-device copy counting bytes read and written.
H200_BF16_FLOPS = 788e12
H200_BYTES_PER_S = 4.3e12

# Ops that alias their input or only allocate, and move no bytes, though the dispatcher does not mark them as views.
_NO_TRAFFIC = {"aten._unsafe_view", "aten.empty", "aten.empty_like", "aten.new_empty", "aten.empty_strided"}
# Ops that write without reading (fills), and ops that read only the elements they write (indexing).
_WRITE_ONLY = {"aten.zeros", "aten.zeros_like", "aten.new_zeros", "aten.full", "aten.full_like", "aten.arange"}
_READ_WHAT_THEY_WRITE = {"aten.gather", "aten.index_select"}


def tensors_in(tree: Any) -> list[torch.Tensor]:
    """Every tensor in a nest of tuples, lists and dicts (an op's arguments or results)."""
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class _Recorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, int, int, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = str(func._overloadpacket)
        if not func.is_view and name not in _NO_TRAFFIC:
            formula = flop_registry.get(func._overloadpacket)
            flops = int(formula(*args, **kwargs, out_val=out)) if formula else 0
            written = sum(t.nbytes for t in tensors_in(out))
            read = sum(t.nbytes for t in tensors_in((args, kwargs)))
            if name in _WRITE_ONLY:
                read = 0
            elif name in _READ_WHAT_THEY_WRITE:
                read = min(read, written)
            self.rows.append((name, flops, read, written))
        return out


class _FlashAttention(torch.autograd.Function):
    # What a fused attention kernel keeps for its backward pass: q, k, v and the output, no score matrix.
    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        ctx.save_for_backward(q, k, v, out)
        return out


class FusedAttention(TorchFunctionMode):
    """Run ``scaled_dot_product_attention`` as one fused kernel would, not as its unfused decomposition.

    ``charge(q, k, v, out)`` is told of each call; the output has the right shape and no values.
    """

    def __init__(self, charge: Callable[..., None]) -> None:
        super().__init__()
        self.charge = charge

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        out = _FlashAttention.apply(q, k, v)
        self.charge(q, k, v, out)
        return out


def op_costs(fn: Callable[[], Any]) -> pd.DataFrame:
    """Run ``fn`` (on meta tensors) and return one row per dispatched op: op, flops, bytes_read, bytes_written."""
    recorder = _Recorder()

    def charge(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor) -> None:
        # Q K^T and P V: 2 multiply-adds per (query, key, channel) each; reads q, k and v, writes the output.
        flops = 4 * q.shape[:-1].numel() * k.shape[-2] * q.shape[-1]
        recorder.rows.append(("aten._scaled_dot_product_flash_attention", flops, q.nbytes + k.nbytes + v.nbytes,
                              out.nbytes))

    with torch.no_grad(), recorder, FusedAttention(charge):
        fn()
    return pd.DataFrame(recorder.rows, columns=["op", "flops", "bytes_read", "bytes_written"])


def roofline(ops: pd.DataFrame, peak_flops: float = H200_BF16_FLOPS,
             bytes_per_s: float = H200_BYTES_PER_S) -> dict[str, float]:
    """Seconds of ``ops`` (from :func:`op_costs`) under the roofline of one device.

    Returns ``eager_s`` (each op its own kernel), ``ceiling_s`` (only the FLOP-carrying ops), the
    FLOPs and bytes behind them, and how much of the eager bound is memory-bound ops.
    """
    compute = ops["flops"] / peak_flops
    memory = (ops["bytes_read"] + ops["bytes_written"]) / bytes_per_s
    per_op = pd.concat([compute, memory], axis=1).max(axis=1)
    heavy = ops["flops"] > 0
    eager = float(per_op.sum())
    return {
        "flops": float(ops["flops"].sum()),
        "bytes": float((ops["bytes_read"] + ops["bytes_written"]).sum()),
        "eager_s": eager,
        "ceiling_s": float(per_op[heavy].sum()),
        "memory_bound_share_eager": float(per_op[~heavy].sum() / eager) if eager else 0.0,
    }


def by_op(ops: pd.DataFrame) -> pd.DataFrame:
    """Calls, TFLOP and GB per op, most traffic first: the table behind a roofline."""
    table = ops.assign(gb=(ops["bytes_read"] + ops["bytes_written"]) / 1e9, tflop=ops["flops"] / 1e12)
    table = table.groupby("op").agg(calls=("op", "size"), tflop=("tflop", "sum"), gb=("gb", "sum"))
    return table.sort_values("gb", ascending=False).reset_index()


# ---------------------------------------------------------------- the networks, shapes only


def compute_dtype(cfg: Config) -> torch.dtype:
    """The dtype a GPU runs the networks in: bf16 under ``runtime.bf16`` (autocast), else float32."""
    return torch.bfloat16 if cfg.runtime.bf16 else torch.float32


def meta_unet(cfg: Config, dtype: torch.dtype) -> torch.nn.Module:
    """The profile's diffusion UNet on the meta device."""
    from stages.diffusion_model import build_unet, unet_flags

    with torch.device("meta"):
        return build_unet(unet_flags(cfg.diffusion)).to(dtype)


def meta_realnet(cfg: Config, dtype: torch.dtype) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The profile's backbone and a RealNet head on a random AFS selection of its width, on the meta device."""
    from realnet_core.features.backbones import build_backbone
    from stages.methods.realnet.bench import random_model

    with torch.device("meta"):
        backbone = build_backbone(cfg.backbone.name, weights="random").to(dtype)
    # Built on the CPU, then moved: the head keeps its channel selection as host tensors.
    return backbone, random_model(cfg, list(backbone.channels)).to(device="meta", dtype=dtype)


# ---------------------------------------------------------------- the bench part


def bench_roofline(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """``realnet bench --part roofline``: SIA sampling and batched inference under the H200's roofline.

    Shapes only, on the meta device, whatever ``device`` is: the networks in the dtype the GPU runs them
    in (bf16 under ``runtime.bf16``), SIA at the profile's batch, inference at batch 64 like the bench.
    """
    from flows.bench.profiling import TRACE
    from realnet_core.metrics import image_scores

    dtype = compute_dtype(cfg)
    batch, steps, size = cfg.sia.batch_size, cfg.sia.sampling_steps, cfg.diffusion.image_size
    unet, (backbone, head) = meta_unet(cfg, dtype), meta_realnet(cfg, dtype)
    head.eval()
    with torch.device("meta"):
        noise, t = torch.empty(batch, 3, size, size, dtype=dtype), torch.zeros(batch, dtype=torch.long)
        images = torch.empty(64, 3, cfg.data.image_size, cfg.data.image_size, dtype=dtype)

    def infer() -> None:
        image_scores(head(backbone(images), out_size=tuple(images.shape[-2:]))["anomaly_map"], cfg.evaluate.pool_size)

    out: dict[str, Any] = {"notes": [f"roofline: modelled on the meta device against {H200_BF16_FLOPS / 1e12:g} "
                                     f"TFLOP/s and {H200_BYTES_PER_S / 1e12:g} TB/s (measured on an H200), not timed"]}
    for name, fn, images_per_call in (("sia", lambda: unet(noise, t), batch / steps), ("inference", infer, 64)):
        ops = op_costs(fn)
        bound = roofline(ops)
        out[f"{name}_roofline_eager_images_per_s"] = images_per_call / bound["eager_s"]
        out[f"{name}_roofline_ceiling_images_per_s"] = images_per_call / bound["ceiling_s"]
        out[f"{name}_roofline_memory_bound_share"] = bound["memory_bound_share_eager"]
        out[f"{name}_roofline_gb_per_call"] = bound["bytes"] / 1e9
        if TRACE["dir"] is not None:  # the op table goes beside the profiler traces, when asked for
            Path(TRACE["dir"]).mkdir(parents=True, exist_ok=True)
            by_op(ops).to_csv(Path(TRACE["dir"]) / f"{name}.roofline.csv", index=False)
    return out
