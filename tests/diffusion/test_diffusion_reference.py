"""Gaussian diffusion maths against guided-diffusion's reference numbers (fixtures/gaussian_diffusion)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realnet_core.diffusion.gaussian_diffusion import get_named_beta_schedule
from realnet_core.diffusion.respace import SpacedDiffusion, space_timesteps

FIXTURE = Path(__file__).parent / "fixtures" / "gaussian_diffusion_reference.json"

F64 = {"rtol": 1e-10, "atol": 1e-12}  # README: float64 re-implementation vs float64-coefficient cases
F32 = {"rtol": 1e-5, "atol": 1e-6}  # README: float32 re-implementation vs either variant
PROCESS_SPEC = {"full": "", "ddim20": "ddim20"}


@pytest.fixture(scope="module")
def ref() -> dict:
    return json.loads(FIXTURE.read_text())


def assert_close(got, expected, *, rtol: float, atol: float, what: str) -> None:
    got = np.asarray(got.detach().cpu().double() if torch.is_tensor(got) else got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs {expected.shape}"
    excess = np.abs(got - expected) - (rtol * np.abs(expected) + atol)
    worst = np.unravel_index(np.argmax(excess), excess.shape) if excess.size else ()
    assert (excess <= 0).all(), f"{what}: worst at {worst}: {got[worst]!r} vs {expected[worst]!r}"


def make_process(name: str) -> SpacedDiffusion:
    betas = get_named_beta_schedule("linear", 1000)
    return SpacedDiffusion(space_timesteps(1000, PROCESS_SPEC[name]), betas, learn_sigma=True)


class StubModel:
    """Returns the fixture's model output whatever x and t are, and records the t it saw."""

    def __init__(self, output: torch.Tensor):
        self.output, self.seen = output, []

    def __call__(self, x, t, **_):
        self.seen.append(t.tolist())
        return self.output.to(x.dtype)


def case_items(ref: dict, variant: str):
    for process in ("full", "ddim20"):
        for case_name, case in ref[variant][process].items():
            if case_name.startswith("t="):
                yield process, case_name, case


# ----------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("process", ["full", "ddim20"])
def test_schedules(ref, process):
    expected = ref["cases"][process]["schedule"]
    d = make_process(process)
    assert d.num_timesteps == expected["num_timesteps"]
    assert d.original_num_steps == expected["original_num_steps"]
    assert d.timestep_map.tolist() == expected["timestep_map"]
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped"):
        assert_close(getattr(d, name), expected[name], **F64, what=f"{process}/{name}")


def test_linear_schedule_is_float64_linspace():
    betas = get_named_beta_schedule("linear", 1000)
    assert betas.dtype == np.float64
    np.testing.assert_array_equal(betas, np.linspace(1e-4, 0.02, 1000))
    cos = get_named_beta_schedule("cosine", 1000)
    assert cos.dtype == np.float64 and (cos > 0).all() and cos.max() <= 0.999


# ----------------------------------------------------------------------------------------------
# Every recorded quantity, float64 and float32
# ----------------------------------------------------------------------------------------------


def check_case(ref: dict, process: str, case: dict, dtype: torch.dtype, tol: dict) -> None:
    inputs = ref["inputs"]
    x0 = torch.tensor(inputs["x_start"], dtype=torch.float64).to(dtype)
    noise = torch.tensor(inputs["noise"], dtype=torch.float64).to(dtype)
    stub = StubModel(torch.tensor(inputs["model_output"], dtype=torch.float64).to(dtype))
    d = make_process(process)
    t = torch.tensor(case["t"], dtype=torch.long)
    tag = f"{process}/t={case['t']}/{dtype}"

    x_t = d.q_sample(x0, t, noise)
    assert x_t.dtype == dtype
    assert_close(x_t, case["q_sample"], **tol, what=f"{tag}/q_sample")

    mean, var, log_var = d.q_posterior_mean_variance(x0, x_t, t)
    post = case["q_posterior_mean_variance"]
    assert_close(mean, post["mean"], **tol, what=f"{tag}/posterior mean")
    assert_close(var, post["variance"], **tol, what=f"{tag}/posterior variance")
    assert_close(log_var, post["log_variance_clipped"], **tol, what=f"{tag}/posterior log var")

    for clip in (False, True):
        out = d.p_mean_variance(stub, x_t, t, clip_denoised=clip)
        expected = case["p_mean_variance"][f"clip_denoised={str(clip).lower()}"]
        for key in ("mean", "variance", "log_variance", "pred_xstart"):
            assert_close(out[key], expected[key], **tol, what=f"{tag}/p_mean_variance clip={clip} {key}")
    assert stub.seen[-1] == case["model_t_seen"]

    vb = d.vb_terms_bpd(stub, x0, x_t, t, clip_denoised=False)["output"]
    assert_close(vb, case["vb_terms_bpd_output"], **tol, what=f"{tag}/vb_terms_bpd")

    losses = d.training_losses(stub, x0, t, noise=noise)
    for key in ("mse", "vb", "loss"):
        assert_close(losses[key], case["training_losses"][key], **tol, what=f"{tag}/training_losses {key}")
    assert stub.seen[-1] == case["model_t_seen"]

    if "sdas_step" in case:
        steps = case["sdas_step"]
        assert (t != 0).long().tolist() == steps["nonzero_mask"]
        for s_key, s in (("s=0.0", 0.0), ("s=0.15", 0.15)):
            out = d.p_sample_step(stub, x_t, t, strength=s, noise=noise, clip_denoised=False)
            assert_close(out["sample"], steps[s_key]["sample"], **tol, what=f"{tag}/sdas {s_key}")


@pytest.mark.parametrize("process", ["full", "ddim20"])
def test_float64_matches_float64_coefficient_reference(ref, process):
    cases = [c for p, _, c in case_items(ref, "cases_float64_coefficients") if p == process]
    assert len(cases) == 2
    for case in cases:
        check_case(ref, process, case, torch.float64, F64)


@pytest.mark.parametrize("variant", ["cases", "cases_float64_coefficients"])
def test_float32_matches_either_reference(ref, variant):
    for process, _, case in case_items(ref, variant):
        check_case(ref, process, case, torch.float32, F32)


def test_reference_has_sdas_cases_for_ddim20(ref):
    # Guard against silently skipping the SDAS checks if the fixture layout changes.
    names = [n for p, n, c in case_items(ref, "cases_float64_coefficients") if "sdas_step" in c]
    assert len(names) == 2
