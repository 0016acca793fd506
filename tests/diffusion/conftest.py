"""Shared fixtures for the diffusion tests: tiny models that run in milliseconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from realnet_core.diffusion.unet import create_unet

FIXTURE_DIR = Path(__file__).parent / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread():
    # These tensors are tiny: on the shared 2-core machines the intra-op thread pool made a
    # classifier-gradient call ~100x slower than a single thread does.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURE_DIR


class ToyEpsModel(nn.Module):
    """Cheap deterministic, per-sample model with 2C outputs: eps = a*x + b*t/1000, v = tanh(x)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(0.3))
        self.b = nn.Parameter(torch.tensor(0.1))
        self.seen_t: list[list[int]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, **_) -> torch.Tensor:
        self.seen_t.append(t.tolist())
        tt = (t.to(x.dtype) / 1000).reshape(-1, 1, 1, 1)
        return torch.cat([self.a.to(x.dtype) * x + self.b.to(x.dtype) * tt, torch.tanh(x)], dim=1)


@pytest.fixture
def toy_model() -> ToyEpsModel:
    return ToyEpsModel()


def _perturb_zero_init(model: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1 and torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


@pytest.fixture
def perturb():
    """Give the zero-initialised residual/output convs random weights so every path matters."""
    return _perturb_zero_init


@pytest.fixture
def tiny_unet():
    """Factory for a ~0.8M-parameter 16x16 UNet with the guided-diffusion block structure."""

    def make(**overrides) -> nn.Module:
        flags = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult=(1, 2),
                     attention_resolutions="8", num_head_channels=32)
        flags.update(overrides)
        return create_unet(**flags)

    return make
