"""The SDAS sampler loop: reproducibility, s = 0 equivalence, per-image strength, DDIM, guidance."""

from __future__ import annotations

import pytest
import torch

from realnet_core.diffusion.classifier import create_classifier, make_cond_fn
from realnet_core.diffusion.gaussian_diffusion import get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, space_timesteps
from realnet_core.diffusion.sdas import sample_loop, sdas_sample

SHAPE = (2, 3, 8, 8)


def spaced(spec: str = "ddim20") -> SpacedDiffusion:
    return SpacedDiffusion(space_timesteps(1000, spec), get_named_beta_schedule("linear", 1000))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_output_range_shape_and_reproducibility(toy_model):
    d = spaced()
    a = sdas_sample(toy_model, d, SHAPE, 0.15, generator=gen(1))
    b = sdas_sample(toy_model, d, SHAPE, 0.15, generator=gen(1))
    c = sdas_sample(toy_model, d, SHAPE, 0.15, generator=gen(2))
    assert a.shape == SHAPE and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # The network is fed the original timesteps, from 950 down to 0.
    assert [ts[0] for ts in toy_model.seen_t[:20]] == list(range(950, -1, -50))


def test_zero_strength_is_the_ordinary_ancestral_sampler(toy_model):
    d = spaced("5")
    g = gen(3)
    x = torch.randn(SHAPE, generator=g)
    with torch.no_grad():
        for i in reversed(range(d.num_timesteps)):
            t = torch.full((SHAPE[0],), i)
            out = d.p_mean_variance(toy_model, x, t, clip_denoised=True)
            noise = torch.randn(SHAPE, generator=g)
            x = out["mean"] + (i != 0) * torch.exp(0.5 * out["log_variance"]) * noise
    got = sdas_sample(toy_model, d, SHAPE, 0.0, generator=gen(3))
    torch.testing.assert_close(got, x.clamp(-1, 1))


def test_per_image_strength_matches_separate_runs(toy_model):
    d = spaced("5")
    mixed = sdas_sample(toy_model, d, SHAPE, torch.tensor([0.0, 0.5]), generator=gen(4))
    zero = sdas_sample(toy_model, d, SHAPE, 0.0, generator=gen(4))
    half = sdas_sample(toy_model, d, SHAPE, 0.5, generator=gen(4))
    torch.testing.assert_close(mixed[0], zero[0])
    torch.testing.assert_close(mixed[1], half[1])
    assert not torch.allclose(zero[1], half[1])
    with pytest.raises(ValueError):
        sdas_sample(toy_model, d, SHAPE, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError):
        sdas_sample(toy_model, d, SHAPE, -0.1)


def test_step_iterator_and_callback(toy_model):
    d = spaced("ddim20")
    steps = list(sample_loop(toy_model, d, SHAPE, 0.1, generator=gen(5)))
    assert [s["t"] for s in steps] == list(range(19, -1, -1))
    seen = []
    final = sdas_sample(toy_model, d, SHAPE, 0.1, generator=gen(5), callback=lambda s: seen.append(s["t"]),
                        progress=True)
    assert seen == list(range(19, -1, -1))
    torch.testing.assert_close(final, steps[-1]["sample"].clamp(-1, 1))
    assert torch.is_grad_enabled()  # the loop does not leak no_grad to the caller


@pytest.mark.parametrize("variance", ["model", "beta", "beta_tilde"])
def test_ddim_variant(toy_model, variance):
    d = spaced("ddim20")
    x_T = torch.randn(SHAPE, generator=gen(6))
    # s = 0: deterministic DDIM, independent of the per-step noise.
    a = sdas_sample(toy_model, d, SHAPE, 0.0, ddim=True, ddim_variance=variance, noise=x_T, generator=gen(1))
    b = sdas_sample(toy_model, d, SHAPE, 0.0, ddim=True, ddim_variance=variance, noise=x_T, generator=gen(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = sdas_sample(toy_model, d, SHAPE, 0.2, ddim=True, ddim_variance=variance, noise=x_T, generator=gen(1))
    assert not torch.allclose(a, c)
    assert c.min() >= -1 and c.max() <= 1


def test_tiny_unet_with_classifier_guidance_and_bf16(tiny_unet, perturb):
    torch.manual_seed(0)
    model = perturb(tiny_unet(num_classes=2)).eval()
    classifier = perturb(create_classifier(
        image_size=16, width=32, depth=1, channel_mult=(1, 2), attention_resolutions="8",
        num_head_channels=32, num_classes=2)).eval()
    seen_t = []

    def recording_classifier(x, t):
        seen_t.append(t[0].item())
        return classifier(x, t)

    d = spaced("4")
    shape = (2, 3, 16, 16)
    kwargs = {"y": torch.tensor([0, 1])}
    plain = sdas_sample(model, d, shape, 0.15, generator=gen(7), model_kwargs=kwargs)
    guided = sdas_sample(model, d, shape, 0.15, generator=gen(7), model_kwargs=kwargs,
                         cond_fn=make_cond_fn(recording_classifier, scale=10.0))
    assert guided.shape == shape and not torch.allclose(plain, guided)
    assert seen_t == [999, 666, 333, 0]  # original timesteps reach the classifier too
    low = sdas_sample(model, d, shape, 0.15, generator=gen(7), model_kwargs=kwargs,
                      autocast_dtype=torch.bfloat16)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - plain).abs().mean() < 0.1


def test_explicit_x_T_continues_the_same_draws(toy_model):
    """x_T and the step noise come from one generator, in that order, on the generator's device."""
    model = toy_model
    d = spaced("5")
    a = sdas_sample(model, d, SHAPE, 0.1, generator=gen(8), device="cpu")
    g = gen(8)
    x_T = torch.randn(SHAPE, generator=g)
    b = sdas_sample(model, d, SHAPE, 0.1, generator=g, noise=x_T)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
