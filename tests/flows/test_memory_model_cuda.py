"""CUDA-only checks of the memory model and the memory fixes it found (skipped on CPU-only machines such as CI).

docs/gpu/bench.sh runs these first (phase `tests`): they say whether the modelled
figures in BENCHMARKS.md can be trusted, and whether bf16 GroupNorm behaves on the GPU as on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flows.bench.memory_model import inference_memory
from flows.bench.models import backbone as _backbone
from flows.bench.models import inference_models
from flows.bench.models import realnet as _realnet
from realnet_core.config import load_config
from realnet_core.diffusion.unet import GroupNorm32
from realnet_core.runtime import for_inference
from stages.methods.realnet.detector import anomaly_maps

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def _peak_mib(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_bf16_group_norm_on_cuda_matches_the_float32_round_trip(memory_format):
    torch.manual_seed(0)
    gn = GroupNorm32(32, 256).to(CUDA)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(4, 256, 32, 32, device=CUDA) * 3 + 5).bfloat16().to(memory_format=memory_format)
    ref = F.group_norm(x.float(), 32, gn.weight, gn.bias, gn.eps)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = gn(x)
        compiled = torch.compile(gn, fullgraph=True)(x)
    for out in (eager, compiled):
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), ref, rtol=2 ** -7, atol=2 ** -7)


def test_inference_peak_memory_on_cuda_is_what_the_memory_model_says():
    cfg = load_config("paper")
    modelled = inference_memory(cfg)["inference_modelled_mb_batch1"]

    backbone, head = inference_models(cfg, CUDA)
    image = torch.rand(1, 3, cfg.data.image_size, cfg.data.image_size, device=CUDA)
    anomaly_maps(backbone, head, image, bf16=True)  # warm-up: cuBLAS and cuDNN handles
    measured = _peak_mib(lambda: anomaly_maps(backbone, head, image, bf16=True))

    # The model leaves out the allocator's rounding and cuDNN's workspaces: 2-4% low so far.
    assert 0.9 * measured <= modelled <= 1.02 * measured, (modelled, measured)


def test_weights_that_ask_for_no_gradient_get_no_cached_bf16_copies_on_cuda():
    cfg = load_config("paper")
    backbone = for_inference(_backbone(cfg, CUDA, channels_last=False))
    head = _realnet(cfg, backbone, CUDA, channels_last=False).eval()
    image = torch.rand(1, 3, cfg.data.image_size, cfg.data.image_size, device=CUDA)
    copies = sum(p.numel() for p in head.parameters()) * 2 / 2**20

    trainable = _peak_mib(lambda: anomaly_maps(backbone, head, image, bf16=True))
    for_inference(head)
    inference = _peak_mib(lambda: anomaly_maps(backbone, head, image, bf16=True))

    assert trainable - inference >= 0.9 * copies, (trainable, inference, copies)
