"""Timestep respacing: kept steps, recomputed betas, and the timesteps the network sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realnet_core.diffusion.gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, create_diffusion, space_timesteps

BETAS = get_named_beta_schedule("linear", 1000)


def test_ddim20_is_every_fiftieth_step():
    assert sorted(space_timesteps(1000, "ddim20")) == list(range(0, 1000, 50))
    assert sorted(space_timesteps(1000, "ddim50")) == list(range(0, 1000, 20))
    with pytest.raises(ValueError):
        space_timesteps(1000, "ddim999")  # no integer stride gives exactly 999 steps


def test_even_spacing_includes_both_ends():
    steps = sorted(space_timesteps(1000, "20"))
    assert len(steps) == 20 and steps[0] == 0 and steps[-1] == 999
    assert steps[:4] == [0, 53, 105, 158]
    assert space_timesteps(1000, 20) == space_timesteps(1000, "20")
    # Sections: 10 steps from the first half, 5 from the second.
    sections = sorted(space_timesteps(100, "10,5"))
    assert len(sections) == 15 and sections[9] == 49 and sections[10] == 50 and sections[-1] == 99
    assert space_timesteps(10, "") == set(range(10))
    assert space_timesteps(10, [0, 5, 9]) == {0, 5, 9}
    with pytest.raises(ValueError):
        space_timesteps(10, "11")


@pytest.mark.parametrize("spec", ["ddim20", "20", "10,3,7", [0, 1, 2, 500, 999], [3, 17, 400]])
def test_respaced_betas_reproduce_alphas_cumprod(spec):
    base = GaussianDiffusion(BETAS)
    spaced = SpacedDiffusion(space_timesteps(1000, spec), BETAS)
    kept = spaced.timestep_map
    assert list(kept) == sorted(kept) and spaced.num_timesteps == len(kept)
    np.testing.assert_allclose(spaced.alphas_cumprod, base.alphas_cumprod[kept], rtol=1e-12, atol=0)
    assert (spaced.betas > 0).all() and (spaced.betas < 1).all()


def test_full_respacing_equals_base_process():
    spaced = create_diffusion(1000, "linear", "")
    np.testing.assert_allclose(spaced.betas, BETAS, rtol=1e-12, atol=1e-16)


def test_model_sees_original_timesteps():
    d = SpacedDiffusion(space_timesteps(1000, "ddim20"), BETAS)
    seen = []

    def model(x, t, **_):
        seen.append(t.tolist())
        return torch.zeros(x.shape[0], 6, *x.shape[2:])

    x = torch.zeros(3, 3, 2, 2)
    t = torch.tensor([0, 12, 19])
    d.p_mean_variance(model, x, t)
    d.training_losses(model, x, t)
    d.wrap_model(model)(x, t)
    assert seen == [[0, 600, 950]] * 3
    assert d.model_timesteps(t).dtype == torch.long
