"""Gaussian diffusion maths as in guided-diffusion / improved DDPM (epsilon mean, learned range).

Schedules live in float64 numpy; every per-timestep coefficient is looked up in float64 and only
then cast to the dtype of the tensor it meets, so float64 inputs give exact float64 maths and
float32 inputs lose nothing to a float32-built schedule. The reverse variance is the learned range
of Nichol & Dhariwal (paper eq. S1): log var = frac*log(beta_t) + (1-frac)*log(beta~_t), with
frac = (v+1)/2. The hybrid loss (eq. S2) is eps-MSE + vb, where vb sees a stop-gradded mean and is
scaled by T/1000 (upstream's RESCALED_MSE, which is how lambda = 0.001 is realised).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from realnet_core.runtime import to_device

ModelFn = Callable[..., torch.Tensor]

# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


def get_named_beta_schedule(name: str, num_diffusion_timesteps: int) -> np.ndarray:
    """float64 betas. "linear" scales 1e-4..0.02 to T steps; "cosine" is Nichol & Dhariwal's."""
    if name == "linear":
        scale = 1000 / num_diffusion_timesteps  # keeps the schedule comparable when T != 1000
        return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(
            num_diffusion_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        )
    raise ValueError(f"unknown beta schedule {name!r} (use 'linear' or 'cosine')")


def betas_for_alpha_bar(
    num_diffusion_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999
) -> np.ndarray:
    """Discretise a continuous alpha_bar(t in [0, 1]); beta is capped to avoid a singular end."""
    betas = []
    for i in range(num_diffusion_timesteps):
        t1, t2 = i / num_diffusion_timesteps, (i + 1) / num_diffusion_timesteps
        betas.append(min(1 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# Likelihood helpers
# ----------------------------------------------------------------------------------------------


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    # The tanh approximation upstream uses; the reference numbers depend on it.
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor
) -> torch.Tensor:
    """log p(x) for 8-bit data scaled to [-1, 1], bin width 2/255, open-ended edge bins."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta)
    )


def _per_sample(value: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) tensor as (B, 1, ..., 1) in x's dtype/device."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"expected a scalar or shape ({x.shape[0]},), got {tuple(v.shape)}")
    return v.reshape(-1, *([1] * (x.ndim - 1)))


# ----------------------------------------------------------------------------------------------
# The process
# ----------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """Forward process, learned-range reverse process, VB terms and the hybrid training loss.

    ``model(x_t, t, **model_kwargs)`` must return (B, 2C, H, W) = [eps, v] when ``learn_sigma``
    (v in [-1, 1] interpolates log beta~_t .. log beta_t), else (B, C, H, W) = eps with the fixed
    "large" variance.
    """

    def __init__(self, betas: np.ndarray, *, learn_sigma: bool = True, rescale_vb: bool = True):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must be a 1-D array in (0, 1]")
        self.learn_sigma = learn_sigma
        self.rescale_vb = rescale_vb
        self.num_timesteps = len(betas)
        self.timestep_map = np.arange(self.num_timesteps)

        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        self.betas = betas
        self.alphas_cumprod = ac
        self.alphas_cumprod_prev = ac_prev
        self._arrays: dict[str, np.ndarray] = {
            "betas": betas,
            "log_betas": np.log(betas),
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "sqrt_alphas_cumprod_prev": np.sqrt(ac_prev),
            "sqrt_one_minus_alphas_cumprod_prev": np.sqrt(1.0 - ac_prev),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
            "posterior_variance": post_var,
            # beta~_0 = 0, so the log is clipped to the t=1 value there.
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:])),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
            # Fixed "large" variance for learn_sigma=False (beta_t, with beta~_1 at t=0).
            "fixed_large_variance": np.append(post_var[1], betas[1:]),
        }
        self.posterior_variance = post_var
        self.posterior_log_variance_clipped = self._arrays["posterior_log_variance_clipped"]
        self._torch_cache: dict[tuple[str, torch.device], torch.Tensor] = {}

    # ---- coefficient look-up ---------------------------------------------------------------

    def coef(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``name[t]`` gathered in float64, then cast to like.dtype, shaped to broadcast over like."""
        key = (name, t.device)
        table = self._torch_cache.get(key)
        if table is None:
            table = to_device(torch.from_numpy(self._arrays[name]), t.device)
            self._torch_cache[key] = table
        vals = table[t].to(like.dtype)
        return vals.reshape(-1, *([1] * (like.ndim - 1)))

    # ---- model calls -----------------------------------------------------------------------

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The timestep value the network sees (identity here; SpacedDiffusion maps it)."""
        return t

    def wrap_model(self, model: ModelFn) -> ModelFn:
        """A callable that takes this process's t and feeds the network its own t values."""
        return lambda x, t, **kw: model(x, self.model_timesteps(t), **kw)

    def _run_model(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs) -> torch.Tensor:
        return model(x, self.model_timesteps(t), **(model_kwargs or {})).to(x.dtype)

    # ---- forward process -------------------------------------------------------------------

    def q_mean_variance(self, x_start: torch.Tensor, t: torch.Tensor):
        mean = self.coef("sqrt_alphas_cumprod", t, x_start) * x_start
        variance = 1.0 - self.coef("alphas_cumprod", t, x_start)
        return mean, variance

    def q_sample(
        self, x_start: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise."""
        if noise is None:
            noise = randn_like(x_start, generator)
        return (self.coef("sqrt_alphas_cumprod", t, x_start) * x_start
                + self.coef("sqrt_one_minus_alphas_cumprod", t, x_start) * noise)

    def q_posterior_mean_variance(self, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """q(x_{t-1} | x_t, x_0): (mean, variance, clipped log variance)."""
        mean = (self.coef("posterior_mean_coef1", t, x_t) * x_start
                + self.coef("posterior_mean_coef2", t, x_t) * x_t)
        variance = self.coef("posterior_variance", t, x_t).expand_as(x_t)
        log_variance = self.coef("posterior_log_variance_clipped", t, x_t).expand_as(x_t)
        return mean, variance, log_variance

    # ---- reverse process -------------------------------------------------------------------

    def predict_xstart_from_eps(self, x_t, t, eps) -> torch.Tensor:
        return (self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t
                - self.coef("sqrt_recipm1_alphas_cumprod", t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t, t, pred_xstart) -> torch.Tensor:
        return ((self.coef("sqrt_recip_alphas_cumprod", t, x_t) * x_t - pred_xstart)
                / self.coef("sqrt_recipm1_alphas_cumprod", t, x_t))

    def p_mean_variance(
        self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, *, clip_denoised: bool = True,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, model_kwargs: dict | None = None,
        model_output: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """p(x_{t-1} | x_t): dict(mean, variance, log_variance, pred_xstart, eps).

        ``model_output`` skips the network call (training_losses reuses its one forward pass).
        """
        if model_output is None:
            model_output = self._run_model(model, x, t, model_kwargs)
        c = x.shape[1]
        if self.learn_sigma:
            if model_output.shape[1] != 2 * c:
                raise ValueError(f"learn_sigma needs {2 * c} output channels, got {model_output.shape[1]}")
            eps, v = model_output[:, :c], model_output[:, c:]
            min_log = self.coef("posterior_log_variance_clipped", t, x)
            max_log = self.coef("log_betas", t, x)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            eps = model_output
            variance = self.coef("fixed_large_variance", t, x).expand_as(x)
            log_variance = torch.log(variance)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if denoised_fn is not None:
            pred_xstart = denoised_fn(pred_xstart)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance,
                "pred_xstart": pred_xstart, "eps": eps}

    # ---- classifier guidance ---------------------------------------------------------------

    def condition_mean(self, cond_fn: ModelFn, out: dict, x, t, model_kwargs=None) -> torch.Tensor:
        """Shift the mean by Sigma * grad log p(y|x_t) (Dhariwal & Nichol, Algorithm 1)."""
        grad = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {})).to(x.dtype)
        return out["mean"] + out["variance"] * grad

    def condition_score(self, cond_fn: ModelFn, out: dict, x, t, model_kwargs=None) -> dict:
        """Score-based guidance for DDIM: eps <- eps - sqrt(1 - abar_t) grad (their Algorithm 2)."""
        grad = cond_fn(x, self.model_timesteps(t), **(model_kwargs or {})).to(x.dtype)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        eps = eps - self.coef("sqrt_one_minus_alphas_cumprod", t, x) * grad
        out = dict(out, eps=eps, pred_xstart=self.predict_xstart_from_eps(x, t, eps))
        out["mean"], _, _ = self.q_posterior_mean_variance(out["pred_xstart"], x, t)
        return out

    # ---- sampling steps --------------------------------------------------------------------

    def p_sample_step(
        self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, strength: float | torch.Tensor = 0.0,
        noise: torch.Tensor | None = None, *, clip_denoised: bool = True, cond_fn: ModelFn | None = None,
        model_kwargs: dict | None = None, generator: torch.Generator | None = None,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One SDAS ancestral step: x_{t-1} = mean + [t != 0] sqrt(1 + s) exp(log_var / 2) noise.

        ``strength`` s is a scalar or one value per sample; s = 0 is the ordinary sampler.
        """
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        if cond_fn is not None:
            out["mean"] = self.condition_mean(cond_fn, out, x, t, model_kwargs)
        if noise is None:
            noise = randn_like(x, generator)
        nonzero = _per_sample((t != 0).to(x.dtype), x)
        scale = torch.sqrt(1 + _per_sample(strength, x))
        sample = out["mean"] + nonzero * scale * torch.exp(0.5 * out["log_variance"]) * noise
        return dict(out, sample=sample)

    def ddim_sample_step(
        self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, strength: float | torch.Tensor = 0.0,
        noise: torch.Tensor | None = None, *, variance: str = "model", clip_denoised: bool = True,
        cond_fn: ModelFn | None = None, model_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        denoised_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """SDAS with DDIM (paper Algorithm S1): deterministic eta=0 DDIM mean plus N(0, s * Sigma).

        ``variance`` picks Sigma: "model" (Sigma_theta), "beta" (beta_t) or "beta_tilde" (beta~_t).
        """
        out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, denoised_fn=denoised_fn,
                                   model_kwargs=model_kwargs)
        if cond_fn is not None:
            out = self.condition_score(cond_fn, out, x, t, model_kwargs)
        # Re-derive eps from the (possibly clipped) x0 so the update stays self-consistent.
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        mean = (out["pred_xstart"] * self.coef("sqrt_alphas_cumprod_prev", t, x)
                + self.coef("sqrt_one_minus_alphas_cumprod_prev", t, x) * eps)
        if variance == "model":
            sigma2 = out["variance"]
        elif variance == "beta":
            sigma2 = self.coef("betas", t, x)
        elif variance == "beta_tilde":
            sigma2 = self.coef("posterior_variance", t, x)
        else:
            raise ValueError(f"ddim variance must be 'model', 'beta' or 'beta_tilde', got {variance!r}")
        if noise is None:
            noise = randn_like(x, generator)
        nonzero = _per_sample((t != 0).to(x.dtype), x)
        sample = mean + nonzero * torch.sqrt(_per_sample(strength, x) * sigma2) * noise
        return dict(out, mean=mean, sample=sample)

    # ---- variational bound and training loss -----------------------------------------------

    def vb_terms_bpd(
        self, model: ModelFn, x_start: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, *,
        clip_denoised: bool = True, model_kwargs: dict | None = None,
        model_output: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """L_{t-1} in bits/dim: decoder NLL at t = 0, KL(q(x_{t-1}|x_t,x_0) || p) otherwise."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x_start, x_t, t)
        out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                                   model_output=model_output)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x_start, out["mean"], 0.5 * out["log_variance"])
        nll = mean_flat(nll) / math.log(2.0)
        return {"output": torch.where(t == 0, nll, kl), "pred_xstart": out["pred_xstart"]}

    def training_losses(
        self, model: ModelFn, x_start: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample hybrid loss dict(loss, mse, vb), each of shape (B,)."""
        if noise is None:
            noise = randn_like(x_start, generator)
        x_t = self.q_sample(x_start, t, noise)
        model_output = self._run_model(model, x_t, t, model_kwargs)
        c = x_start.shape[1]
        terms = {"mse": mean_flat((noise - model_output[:, :c]) ** 2)}
        if self.learn_sigma:
            # The vb term trains only the variance: the mean is the stop-gradded eps (eq. S2).
            frozen = torch.cat([model_output[:, :c].detach(), model_output[:, c:]], dim=1)
            vb = self.vb_terms_bpd(None, x_start, x_t, t, clip_denoised=False, model_output=frozen)["output"]
            if self.rescale_vb:
                vb = vb * (self.num_timesteps / 1000.0)
            terms["vb"] = vb
            terms["loss"] = terms["mse"] + vb
        else:
            terms["vb"] = torch.zeros_like(terms["mse"])
            terms["loss"] = terms["mse"]
        return terms

    def sample_timesteps(
        self, batch_size: int, device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Uniform t in [0, T) as in upstream's UniformSampler."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=gen_device)
        return to_device(t, device) if device is not None else t


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device (reproducible across devices)."""
    if generator is None:
        return torch.randn_like(x)
    return to_device(torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype), x.device)
