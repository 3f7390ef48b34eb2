"""Our samplers against the diffusers scheduler loops (an independent implementation), same model, same
start: max |diff| <= 1e-4 in float32, for N in {1, 2, 3, 10, 50}, eps- and v-prediction, leading and
trailing spacing, default and Karras sigmas; also UniPC, and with a shared generator the stochastic
euler_ancestral, dpmpp_2m_sde and ddpm. Only the scheduler's sigmas (and its alphas_cumprod table, to map
a sigma back to the model's timestep) are passed to our side.

Not compared: DDIM on trailing spacing. diffusers' DDIMScheduler steps to t - T // N, which for trailing
(and linspace) spacing is not the next timestep of the grid when N does not divide T (diffusers #11347,
#12633); DDIM is compared on leading spacing, and on trailing only where N divides T.
"""

import math

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from polydiff.core.precond import FlowDenoiser, VPDenoiser
from polydiff.core.samplers import sample
from polydiff.core.schedules import DiscreteSchedule, flow_t_to_sigma

NS = (1, 2, 3, 10, 50)
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 0}
TOL = 1e-4


def _net(t_scale: float):
    """A small fixed random network of (x, t): x (B, 8), t scalar or (B,)."""
    g = torch.Generator().manual_seed(1234)
    w1, w2 = torch.randn(8, 16, generator=g) / 8**0.5, torch.randn(16, 8, generator=g) / 4
    freq = torch.randn(16, generator=g)

    def net(x, t):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1) / t_scale
        return torch.tanh(x @ w1 + torch.sin(3 * t * freq)) @ w2 + 0.1 * x

    return net


NET = _net(1000.0)


def _noise():
    return torch.randn(3, 8, generator=torch.Generator().manual_seed(7))


def _diffusers_loop(sched, x):
    for t in sched.timesteps:
        out = NET(sched.scale_model_input(x, t), t)
        x = sched.step(out, t, x).prev_sample
    return x


def _ours(sched, sigmas, method, prediction, x, quantize=False):
    """Wrap NET for our samplers from the scheduler's own table and sigmas (the helper the issue allows)."""
    denoiser = VPDenoiser(NET, DiscreteSchedule(sched.alphas_cumprod), prediction, quantize=quantize)
    return sample(denoiser, x, sigmas, method)


def _dedupe(sigmas):  # Heun's grid repeats each inner sigma for its two stages
    keep = torch.cat([torch.ones(1, dtype=torch.bool), sigmas[1:] != sigmas[:-1]])
    return sigmas[keep]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("karras", [False, True])
@pytest.mark.parametrize("method", ["euler", "heun", "dpmpp_2m"])
def test_k_style_schedulers_match(method, karras, spacing, prediction):
    cls = {"euler": EulerDiscreteScheduler, "heun": HeunDiscreteScheduler,
           "dpmpp_2m": DPMSolverMultistepScheduler}[method]
    pred = {"epsilon": "eps", "v_prediction": "v"}[prediction]
    for n in NS:
        sched = cls(prediction_type=prediction, timestep_spacing=spacing, use_karras_sigmas=karras, **SD)
        sched.set_timesteps(n)
        sigmas = _dedupe(sched.sigmas) if method == "heun" else sched.sigmas
        x_edm = _noise() * sigmas[0]
        if method == "dpmpp_2m":   # DPM-Solver works on x_vp = x / sqrt(1 + sigma^2) and rounds Karras timesteps
            ref = _diffusers_loop(sched, x_edm / (1 + sigmas[0] ** 2) ** 0.5)
        else:
            ref = _diffusers_loop(sched, x_edm.clone())
        ours = _ours(sched, sigmas, method, pred, x_edm, quantize=method == "dpmpp_2m")
        assert len(sigmas) == n + 1
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f"{method} n={n}: max |diff| {err:.2e}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_ddim_matches_on_leading_spacing(prediction):
    pred = {"epsilon": "eps", "v_prediction": "v"}[prediction]
    for n in NS:
        sched = DDIMScheduler(prediction_type=prediction, timestep_spacing="leading", clip_sample=False,
                              set_alpha_to_one=True, **SD)
        sched.set_timesteps(n)
        ours_sched = DiscreteSchedule(sched.alphas_cumprod)
        sigmas = ours_sched.sigmas(n, "leading")
        assert torch.equal(ours_sched.timesteps(n, "leading").long(), sched.timesteps)
        x_vp = _noise()
        ref = _diffusers_loop(sched, x_vp.clone())
        ours = _ours(sched, sigmas, "ddim", pred, x_vp * (1 + sigmas[0] ** 2) ** 0.5)
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f"ddim n={n}: max |diff| {err:.2e}"


def test_ddim_zero_terminal_snr_starts_at_infinity():
    """Zero-terminal-SNR, trailing, v-prediction: the first sigma is inf, our start is the unit noise
    itself; compared where diffusers' DDIM previous-timestep rule is right (N divides T)."""
    for n in (1, 2, 10, 50):
        sched = DDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False,
                              rescale_betas_zero_snr=True, **SD)
        sched.set_timesteps(n)
        table = DiscreteSchedule(sched.alphas_cumprod)
        sigmas = table.sigmas(n, "trailing")
        assert math.isinf(sigmas[0]) and torch.equal(table.timesteps(n, "trailing").long(), sched.timesteps)
        ref = _diffusers_loop(sched, _noise())
        ours = _ours(sched, sigmas, "ddim", "v", _noise())
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f"zero-SNR ddim n={n}: max |diff| {err:.2e}"


def test_flow_match_euler_matches():
    vnet = NET   # a velocity network called with t * 1000, like diffusers' FlowMatch models
    for n in NS:
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        sched.set_timesteps(n)
        x = _noise()
        ref = x.clone()
        for t in sched.timesteps:
            ref = sched.step(vnet(ref, t), t, ref).prev_sample
        sigmas = flow_t_to_sigma(sched.sigmas)          # t = 1 -> inf: the start is the noise itself
        ours = sample(FlowDenoiser(vnet, t_scale=1000.0), x, sigmas, "euler")
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f"flow euler n={n}: max |diff| {err:.2e}"


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_unipc_matches(prediction):
    pred = {"epsilon": "eps", "v_prediction": "v"}[prediction]
    for n in NS:
        sched = UniPCMultistepScheduler(prediction_type=prediction, timestep_spacing="trailing", **SD)
        sched.set_timesteps(n)
        sigmas = sched.sigmas
        x_edm = _noise() * sigmas[0]
        ref = _diffusers_loop(sched, x_edm / (1 + sigmas[0] ** 2) ** 0.5)
        ours = _ours(sched, sigmas, "unipc", pred, x_edm)
        err = (ours - ref).abs().max().item()
        assert err <= TOL, f"unipc n={n}: max |diff| {err:.2e}"


def _stochastic_loop(sched, x, seed):
    g = torch.Generator().manual_seed(seed)
    for t in sched.timesteps:
        out = NET(sched.scale_model_input(x, t), t)
        x = sched.step(out, t, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_stochastic_samplers_match_with_the_same_generator(prediction):
    """Both sides draw one randn(x.shape) per noisy step from the same generator, so ancestral Euler,
    SDE-DPM-Solver++(2M) and DDPM (leading spacing, posterior variance) match sample for sample."""
    pred = {"epsilon": "eps", "v_prediction": "v"}[prediction]
    cases = [("euler_ancestral", lambda: EulerAncestralDiscreteScheduler(prediction_type=prediction, **SD), False),
             ("dpmpp_2m_sde", lambda: DPMSolverMultistepScheduler(prediction_type=prediction,
                                                                   algorithm_type="sde-dpmsolver++", **SD), True),
             ("ddpm", lambda: DDPMScheduler(prediction_type=prediction, clip_sample=False,
                                            timestep_spacing="leading", **SD), True)]
    for method, make, vp_input in cases:
        for n in NS:
            sched = make()
            sched.set_timesteps(n)
            table = DiscreteSchedule(sched.alphas_cumprod)
            sigmas = sched.sigmas if hasattr(sched, "sigmas") and method != "ddpm" else table.sigmas(n, "leading")
            x_edm = _noise() * sigmas[0]
            ref = _stochastic_loop(sched, x_edm / (1 + sigmas[0] ** 2) ** 0.5 if vp_input else x_edm.clone(), 99)
            ours = sample(VPDenoiser(NET, table, pred), x_edm, sigmas, method,
                          generator=torch.Generator().manual_seed(99))
            err = (ours - ref).abs().max().item()
            assert err <= TOL, f"{method} n={n}: max |diff| {err:.2e}"
