"""A model of GPU memory, for machines that have no GPU: what diffusion and RealNet training hold for
their backward pass, and the peak of live tensors at inference.

Both count tensor storages as ops make them, the way the CUDA caching allocator's
``max_memory_allocated`` does, without its block rounding, cuDNN workspaces or the CUDA context. Run on
the code that two H100 figures were measured with, they come out 2-4% low (BENCHMARKS.md): diffusion
training at batch 16 (77 GB measured, 75.3 GB modelled) and inference at batch 1 (3,949 MiB measured,
3,815 MiB modelled).
"""

from __future__ import annotations

import gc
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from flows.bench.roofline import FusedAttention, compute_dtype, meta_realnet, meta_unet, tensors_in
from realnet_core.config import Config

# ---------------------------------------------------------------- counting storages


class _Live(TorchDispatchMode):
    """The storages ops make, how many bytes of them are alive, and the most there ever were at once.

    A storage dies with the last tensor that holds it: a weak reference per tensor notices (torch keeps
    a tensor's Python object while autograd or a view still holds it, so its death is the storage's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.holders: dict[int, int] = defaultdict(int)
        self.nbytes: dict[int, int] = {}
        self.refs: list[weakref.ref] = []
        self.live = self.peak = 0

    def _release(self, cdata: int) -> None:
        self.holders[cdata] -= 1
        if self.holders[cdata] == 0:
            self.live -= self.nbytes.pop(cdata)
            del self.holders[cdata]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tensors_in(out):
            cdata = t.untyped_storage()._cdata
            if cdata not in self.nbytes:
                self.nbytes[cdata] = t.untyped_storage().nbytes()
                self.live += self.nbytes[cdata]
            self.holders[cdata] += 1
            self.refs.append(weakref.ref(t, lambda _, cdata=cdata: self._release(cdata)))
        self.peak = max(self.peak, self.live)
        return out


def peak_bytes(fn: Callable[[], Any]) -> int:
    """The most bytes of tensors made inside ``fn()`` that were alive at once (inputs and weights not counted)."""
    live = _Live()
    with live:
        fn()
    return live.peak


def activation_bytes(fn: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes that ``fn()`` leaves held for the backward pass: the activation memory of a training step.

    Two ways in, each storage counted once: what autograd saves (a SiLU and the convolution after it
    share one input), and what is still alive when ``fn`` returns, which also catches the block inputs
    that activation checkpointing holds to recompute from. Storages of ``exclude`` (the parameters) are
    left out; attention keeps what FlashAttention keeps (q, k, v and its output), not a score matrix.
    """
    skip = {t.untyped_storage()._cdata for t in exclude}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved[t.untyped_storage()._cdata] = t.untyped_storage().nbytes()
        return t

    live = _Live()
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), live:
        with FusedAttention(lambda *_: None):
            result = fn()
        gc.collect()
        alive = dict(live.nbytes)
    del result
    return sum(nbytes for cdata, nbytes in (saved | alive).items() if cdata not in skip)


# ---------------------------------------------------------------- the bench part


def _training_state_bytes(params: int, dtype: torch.dtype, ema: bool) -> int:
    # float32 weights, gradients and Adam's two moments, the EMA copy if the stage keeps one, and under
    # bf16 the copy of each weight that autocast keeps for the step.
    per_param = 4 + 4 + 8 + (4 if ema else 0) + (2 if dtype == torch.bfloat16 else 0)
    return params * per_param


def diffusion_training_memory(cfg: Config) -> dict[str, float]:
    """GB that diffusion training needs at the profile's batch, with and without ``runtime.grad_checkpoint``.

    The float32 state (weights, EMA copy, gradients, Adam's two moments, and under bf16 the copies of the
    weights that autocast keeps for the step) plus the batch times the activations of one image, counted
    on the meta device with the network in the dtype autocast runs it in.
    """
    from realnet_core.diffusion.unet import set_grad_checkpoint

    dtype, size = compute_dtype(cfg), cfg.diffusion.image_size
    unet = meta_unet(cfg, dtype).train()
    x, t = torch.empty(1, 3, size, size, dtype=dtype, device="meta"), torch.zeros(1, dtype=torch.long, device="meta")
    params = sum(p.numel() for p in unet.parameters())
    state_gb = _training_state_bytes(params, dtype, ema=True) / 1e9
    out = {"diffusion_train_state_gb": state_gb}
    for checkpointed, suffix in ((False, ""), (True, "_checkpointed")):
        set_grad_checkpoint(unet, checkpointed)
        per_image = activation_bytes(lambda: unet(x, t), exclude=unet.parameters()) / 1e9
        out[f"diffusion_train_activation_gb_per_image{suffix}"] = per_image
        out[f"diffusion_train_modelled_gb{suffix}"] = state_gb + cfg.diffusion.batch_size * per_image
    return out


def realnet_training_memory(cfg: Config) -> dict[str, float]:
    """GB that stage 4 needs at the profile's batch: the head's float32 state (weights, gradients, Adam's two
    moments, autocast's bf16 weight copies), the frozen backbone's weights, the backbone features of the
    anomalous and normal images (float32, as ``paired_features`` hands them over), and the head's activations.
    """
    dtype, n, size = compute_dtype(cfg), cfg.train.batch_size, cfg.data.image_size
    backbone, head = meta_realnet(cfg, dtype)
    head.train()
    with torch.device("meta"), torch.no_grad():
        feats = backbone(torch.empty(2 * n, 3, size, size, dtype=dtype))
        masks = torch.empty(n, 1, size, size)
    head_state = _training_state_bytes(sum(p.numel() for p in head.parameters()), dtype, ema=False)
    backbone_weights = 4 * sum(p.numel() for p in backbone.parameters())
    fixed = head_state + backbone_weights + sum(4 * f.numel() for f in feats)  # features of all 2n images
    activations = activation_bytes(lambda: head.loss(head([f[:n] for f in feats], [f[n:] for f in feats],
                                                          out_size=(size, size)), masks), exclude=head.parameters())
    return {"realnet_train_activation_gb": activations / 1e9, "realnet_train_modelled_gb": (fixed + activations) / 1e9}


def inference_memory(cfg: Config) -> dict[str, float]:
    """MiB that inference needs at batch 1: the weights plus the peak of live tensors in one call.

    Run for real on the CPU, under CPU autocast when ``runtime.bf16`` (the meta device has no autocast,
    and what autocast keeps alive is the point), with the modules as evaluation loads them.
    """
    from flows.bench.models import inference_models
    from stages.methods.realnet.detector import anomaly_maps

    backbone, head = inference_models(cfg, torch.device("cpu"))
    weights = sum(t.nbytes for m in (backbone, head) for t in [*m.parameters(), *m.buffers()])
    image = torch.rand(1, 3, cfg.data.image_size, cfg.data.image_size, generator=torch.Generator().manual_seed(0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.runtime.bf16)

    def call() -> None:
        with autocast:
            anomaly_maps(backbone, head, image, bf16=False)  # autocast is on the CPU here, not in the helper

    out = {"inference_weights_mb": weights / 2**20}
    out["inference_modelled_mb_batch1"] = (weights + peak_bytes(call)) / 2**20
    head.requires_grad_(True)  # as evaluation loaded it before for_inference: what autocast then kept
    out["inference_modelled_mb_batch1_weights_requiring_grad"] = (weights + peak_bytes(call)) / 2**20
    return out


def bench_memory_model(cfg: Config, device: torch.device, quick: bool, channels_last: bool) -> dict[str, Any]:
    """``realnet bench --part memory_model``: diffusion training and batch-1 inference memory, modelled."""
    return {"notes": ["memory_model: tensor bytes counted on the meta device and the CPU, not measured on a GPU"],
            **diffusion_training_memory(cfg), **realnet_training_memory(cfg), **inference_memory(cfg)}
