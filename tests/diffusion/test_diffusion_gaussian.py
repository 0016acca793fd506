"""Closed forms, the SDAS variance scaling, the hybrid loss and its stop-gradient."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from realnet_core.diffusion.gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, space_timesteps

BETAS = get_named_beta_schedule("linear", 1000)


@pytest.fixture
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(BETAS)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_posterior_is_the_bayesian_product_of_gaussians(diffusion):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): precision-weighted closed form."""
    x0, xt = randn(4, 3, 2, 2, seed=1), randn(4, 3, 2, 2, seed=2)
    t = torch.tensor([1, 10, 500, 999])
    mean, var, log_var = diffusion.q_posterior_mean_variance(x0, xt, t)
    ab = np.cumprod(1 - BETAS)
    for i, ti in enumerate(t.tolist()):
        beta, ab_t, ab_prev = BETAS[ti], ab[ti], ab[ti - 1]
        precision = 1 / (1 - ab_prev) + (1 - beta) / beta
        exp_var = 1 / precision
        exp_mean = exp_var * (math.sqrt(ab_prev) / (1 - ab_prev) * x0[i] + math.sqrt(1 - beta) / beta * xt[i])
        torch.testing.assert_close(mean[i], exp_mean, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(var[i], torch.full_like(var[i], exp_var), rtol=1e-9, atol=0)
        torch.testing.assert_close(var[i], torch.full_like(var[i], (1 - ab_prev) / (1 - ab_t) * beta))
        torch.testing.assert_close(log_var[i], torch.log(var[i]))
    # t = 0: the posterior collapses onto x_0 and the log variance is clipped to the t = 1 value.
    mean0, var0, log_var0 = diffusion.q_posterior_mean_variance(x0, xt, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(mean0, x0)
    assert torch.count_nonzero(var0) == 0
    torch.testing.assert_close(log_var0, torch.full_like(log_var0, math.log(diffusion.posterior_variance[1])))


def test_q_sample_moments(diffusion):
    x0 = torch.full((20000, 1, 1, 1), 0.5, dtype=torch.float64)
    t = torch.full((20000,), 300)
    xt = diffusion.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    ab = diffusion.alphas_cumprod[300]
    assert abs(xt.mean().item() - math.sqrt(ab) * 0.5) < 0.02
    assert abs(xt.var().item() - (1 - ab)) < 0.03


def test_learned_range_endpoints(diffusion):
    x = randn(2, 3, 4, 4)
    t = torch.tensor([5, 700])
    ends = {1.0: np.log(diffusion.betas), -1.0: np.log(diffusion.posterior_variance[1:])}
    for v, table in ends.items():
        out_v = torch.cat([torch.zeros_like(x), torch.full_like(x, v)], dim=1)
        out = diffusion.p_mean_variance(lambda *_, o=out_v, **__: o, x, t)
        index = t.numpy() - (1 if v < 0 else 0)  # the posterior table above starts at t = 1
        expected = torch.tensor(table[index]).reshape(2, 1, 1, 1).expand_as(x)
        torch.testing.assert_close(out["log_variance"], expected)
        torch.testing.assert_close(out["variance"], expected.exp())


def test_float32_inputs_stay_float32_with_float64_schedule(diffusion):
    x = randn(2, 3, 4, 4, dtype=torch.float32)
    t = torch.tensor([0, 999])
    out = diffusion.p_mean_variance(lambda x, t: torch.zeros(2, 6, 4, 4), x, t)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert diffusion.q_sample(x, t).dtype == torch.float32


# ----------------------------------------------------------------------------------------------
# SDAS step
# ----------------------------------------------------------------------------------------------


def test_sdas_noise_std_scales_by_sqrt_one_plus_s(toy_model):
    d = SpacedDiffusion(space_timesteps(1000, "ddim20"), BETAS)
    x, noise = randn(3, 3, 4, 4, seed=3), randn(3, 3, 4, 4, seed=4)
    t = torch.tensor([19, 7, 1])
    with torch.no_grad():
        base = d.p_sample_step(toy_model.double(), x, t, strength=0.0, noise=noise)
        for s in (0.15, 0.5, 2.0):
            out = d.p_sample_step(toy_model, x, t, strength=s, noise=noise)
            torch.testing.assert_close(out["mean"], base["mean"])
            torch.testing.assert_close(out["sample"] - out["mean"],
                                       math.sqrt(1 + s) * (base["sample"] - base["mean"]),
                                       rtol=1e-12, atol=1e-14)
        # Per-sample strengths act row by row.
        per = d.p_sample_step(toy_model, x, t, strength=torch.tensor([0.0, 0.5, 2.0]), noise=noise)
        for i, s in enumerate((0.0, 0.5, 2.0)):
            torch.testing.assert_close(per["sample"][i] - per["mean"][i],
                                       math.sqrt(1 + s) * (base["sample"][i] - base["mean"][i]))
        # s = 0 is the ordinary ancestral step: mean + exp(log_var / 2) * noise.
        expected = base["mean"] + torch.exp(0.5 * base["log_variance"]) * noise
        torch.testing.assert_close(base["sample"], expected)


def test_no_noise_at_the_last_step(toy_model):
    d = GaussianDiffusion(BETAS)
    x, noise = randn(2, 3, 4, 4), randn(2, 3, 4, 4, seed=1)
    with torch.no_grad():
        out = d.p_sample_step(toy_model.double(), x, torch.tensor([0, 0]), strength=0.2, noise=noise)
        ddim = d.ddim_sample_step(toy_model, x, torch.tensor([0, 0]), strength=0.2, noise=noise)
    torch.testing.assert_close(out["sample"], out["mean"], rtol=0, atol=0)
    torch.testing.assert_close(ddim["sample"], ddim["mean"], rtol=0, atol=0)


@pytest.mark.parametrize("variance", ["model", "beta", "beta_tilde"])
def test_ddim_step_follows_algorithm_s1(toy_model, variance):
    d = SpacedDiffusion(space_timesteps(1000, "ddim20"), BETAS)
    x, noise = randn(2, 3, 4, 4, seed=5), randn(2, 3, 4, 4, seed=6)
    t = torch.tensor([12, 3])
    s = 0.3
    with torch.no_grad():
        out = d.ddim_sample_step(toy_model.double(), x, t, strength=s, noise=noise, variance=variance,
                                 clip_denoised=False)
        eps = toy_model(x, d.model_timesteps(t))[:, :3]
        pmv = d.p_mean_variance(toy_model, x, t, clip_denoised=False)
    ab = torch.tensor(d.alphas_cumprod[t.numpy()]).reshape(-1, 1, 1, 1)
    ab_prev = torch.tensor(d.alphas_cumprod_prev[t.numpy()]).reshape(-1, 1, 1, 1)
    x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
    mean = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    sigma = {"model": pmv["variance"],
             "beta": torch.tensor(d.betas[t.numpy()]).reshape(-1, 1, 1, 1),
             "beta_tilde": torch.tensor(d.posterior_variance[t.numpy()]).reshape(-1, 1, 1, 1)}[variance]
    torch.testing.assert_close(out["mean"], mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out["sample"], mean + (s * sigma).sqrt() * noise, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError):
        d.ddim_sample_step(toy_model, x, t, variance="bogus")


# ----------------------------------------------------------------------------------------------
# Hybrid loss
# ----------------------------------------------------------------------------------------------


def test_vb_gradient_reaches_only_the_variance_channels(diffusion):
    output = torch.nn.Parameter(randn(2, 6, 4, 4, seed=7) * 0.5)
    x0 = randn(2, 3, 4, 4, seed=8).clamp(-1, 1)
    t = torch.tensor([0, 400])  # the decoder NLL and a KL term
    losses = diffusion.training_losses(lambda *_, **__: output, x0, t, noise=randn(2, 3, 4, 4, seed=9))
    losses["vb"].sum().backward()
    assert torch.count_nonzero(output.grad[:, :3]) == 0  # mean is stop-gradded in the vb term
    assert torch.count_nonzero(output.grad[:, 3:]) > 0
    output.grad = None
    losses = diffusion.training_losses(lambda *_, **__: output, x0, t, noise=randn(2, 3, 4, 4, seed=9))
    losses["mse"].sum().backward()
    assert torch.count_nonzero(output.grad[:, 3:]) == 0 and torch.count_nonzero(output.grad[:, :3]) > 0
    torch.testing.assert_close(losses["loss"], losses["mse"] + losses["vb"])


def test_vb_is_rescaled_by_number_of_steps():
    spaced = SpacedDiffusion(space_timesteps(1000, "ddim20"), BETAS)
    plain = SpacedDiffusion(space_timesteps(1000, "ddim20"), BETAS, rescale_vb=False)
    output = randn(2, 6, 4, 4, seed=1) * 0.3
    x0, noise, t = randn(2, 3, 4, 4, seed=2).clamp(-1, 1), randn(2, 3, 4, 4, seed=3), torch.tensor([3, 15])
    a = spaced.training_losses(lambda *_: output, x0, t, noise=noise)
    b = plain.training_losses(lambda *_: output, x0, t, noise=noise)
    torch.testing.assert_close(a["vb"], b["vb"] * 20 / 1000)
    torch.testing.assert_close(a["mse"], b["mse"])


def test_hybrid_loss_falls_when_training_a_tiny_unet(tiny_unet):
    torch.manual_seed(0)
    model = tiny_unet()
    d = GaussianDiffusion(BETAS)
    colours = torch.tensor([[1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1],
                            [-1, 1, 1], [1, -1, 1], [0.5, 0.5, 0.5], [-0.5, 0.0, 0.5]])
    x0 = colours[:, :, None, None].expand(8, 3, 16, 16).clone()
    x0[4:, :, :, ::2] *= -1  # half of them striped
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    history = []
    for _ in range(50):
        t = d.sample_timesteps(8, generator=gen)
        losses = d.training_losses(model, x0, t, generator=gen)
        loss = losses["loss"].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append(loss.item())
        assert math.isfinite(history[-1])
    first, last = np.mean(history[:10]), np.mean(history[-10:])
    assert last < 0.7 * first, (first, last)
