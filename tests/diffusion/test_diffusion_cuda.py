"""CUDA-only checks (skipped on CPU-only machines such as CI)."""

from __future__ import annotations

import pytest
import torch

from realnet_core.diffusion.gaussian_diffusion import get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, space_timesteps
from realnet_core.diffusion.sdas import sdas_sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_generator_gives_the_same_images_on_cuda(tiny_unet, perturb):
    torch.manual_seed(0)
    model = perturb(tiny_unet()).eval()
    d = SpacedDiffusion(space_timesteps(1000, "ddim20"), get_named_beta_schedule("linear", 1000))
    shape = (2, 3, 16, 16)
    cpu = sdas_sample(model, d, shape, 0.15, generator=torch.Generator().manual_seed(1))
    gpu = sdas_sample(model.cuda(), d, shape, 0.15, generator=torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    # TF32 convolutions on the GPU allow small differences.
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=2e-2)
    low = sdas_sample(model, d, shape, 0.15, generator=torch.Generator().manual_seed(1),
                      autocast_dtype=torch.bfloat16)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()


def test_training_step_on_cuda_with_bf16(tiny_unet):
    model = tiny_unet(num_classes=3).cuda()
    d = SpacedDiffusion(range(1000), get_named_beta_schedule("linear", 1000))
    x0 = torch.rand(4, 3, 16, 16, device="cuda") * 2 - 1
    t = torch.tensor([0, 10, 500, 999], device="cuda")
    y = torch.tensor([0, 1, 2, 0], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        losses = d.training_losses(model, x0, t, model_kwargs={"y": y})
    assert losses["loss"].dtype == torch.float32
    losses["loss"].mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_noise_from_a_cpu_generator_reaches_the_gpu_unchanged():
    from realnet_core.diffusion.gaussian_diffusion import randn_like

    x = torch.empty(4, 3, 8, 8, device="cuda")
    gpu = randn_like(x, torch.Generator().manual_seed(3))  # through pinned memory, without blocking
    cpu = randn_like(x.cpu(), torch.Generator().manual_seed(3))
    assert torch.equal(gpu.cpu(), cpu)


def test_a_stage_sample_call_never_waits_for_the_gpu(tiny_unet):
    # generate_sia queues the next batch while the GPU still works on this one; one wait anywhere in
    # the call (a blocking copy, a check of a GPU value) would leave the GPU idle at every batch.
    from realnet_core.config import DiffusionConfig
    from stages.diffusion_model import sample_images

    model = tiny_unet().cuda().eval()
    flags = {"image_size": 16, "center": [0.1, 0.0, -0.1], "x0_range": [[-1, -1, -1], [0.9, 1, 1]]}
    cfg = DiffusionConfig(diffusion_steps=1000)

    def call() -> torch.Tensor:
        return sample_images(model, flags, cfg, 4, 0.15, torch.Generator().manual_seed(2), torch.device("cuda"),
                             steps=5)

    first = call()  # fills the pinned-memory pool and the kernel caches
    torch.cuda.set_sync_debug_mode("error")
    try:
        second = call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert second.dtype == torch.uint8 and second.shape == (4, 16, 16, 3)
    assert torch.equal(first, second)


def test_sia_batches_reach_the_host_intact_once_their_event_fires():
    from stages.generate_sia import _to_host

    images = torch.randint(0, 256, (8, 32, 32, 3), dtype=torch.uint8, device="cuda")
    host, arrived = _to_host(images)
    arrived.synchronize()
    assert host.is_pinned() and torch.equal(host, images.cpu())
