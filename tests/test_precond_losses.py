"""Parameterisations and the training loss, checked on Gaussian data where the optimum is closed form.

For x0 ~ N(0, v) and x = x0 + sigma eps: E[x0 | x] = v / (v + s^2) x and Var[x0 | x] = v s^2 / (v + s^2).
A network that outputs its parameterisation's quantity computed from that exact denoiser must give back
the exact denoiser through every wrapper, and its expected loss is the posterior variance divided by
c_out^2 (c_out = dD/dF converts the network's error into x0 error).
"""

import math

import pytest
import torch
from polydiff.core.losses import diffusion_loss, loss_weight
from polydiff.core.precond import EDMPrecond, FlowDenoiser, VEDenoiser, VPDenoiser, add_noise
from polydiff.core.runtime import generators
from polydiff.core.schedules import ContinuousVP, DiscreteSchedule, flow_t_to_sigma
from torch import nn

VAR = 0.7
SIGMAS = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0, 150.0], dtype=torch.float64)
DISCRETE = DiscreteSchedule.named("linear")
CONTINUOUS = ContinuousVP("cosine")


def exact_x0(x, sigma):
    return VAR / (VAR + sigma.reshape(-1, 1) ** 2) * x


def _col(c):
    return c.reshape(-1, 1)


# networks that output their own target, computed from the exact denoiser, in their own input convention

def vp_net(schedule, prediction, t_scale=1.0):
    def net(x_vp, t):
        s = _col(schedule.t_to_sigma(t / t_scale).to(x_vp))
        inf = torch.isinf(s)
        x = torch.where(inf, x_vp, x_vp * (1 + s**2).sqrt())          # back to x = x0 + s eps
        x0 = torch.where(inf, torch.zeros_like(x), exact_x0(x, s.flatten()))
        eps = torch.where(inf, x_vp, (x - x0) / s)
        alpha, sig_vp = torch.rsqrt(1 + s**2), torch.rsqrt(1 + 1 / s**2)
        return {"eps": eps, "x0": x0, "v": alpha * eps - sig_vp * x0}[prediction]
    return net


def flow_net(x_t, t_scaled):
    t = _col(t_scaled / 1000)
    s = flow_t_to_sigma(t).to(x_t)
    x0 = torch.where(torch.isinf(s), torch.zeros_like(x_t), exact_x0(x_t * (1 + s), s.flatten()))
    eps = torch.where(t > 0, (x_t - (1 - t) * x0) / t, x_t)
    return eps - x0


def edm_net(sigma_data):
    def net(x_in, c_noise):
        s = _col(torch.exp(4 * c_noise))
        x = x_in * (s**2 + sigma_data**2).sqrt()
        c_skip = sigma_data**2 / (s**2 + sigma_data**2)
        c_out = s * sigma_data / (s**2 + sigma_data**2).sqrt()
        return (exact_x0(x, s.flatten()) - c_skip * x) / c_out
    return net


def ve_net(x, c_noise):
    s = _col(2 * torch.exp(c_noise))
    return (x - exact_x0(x, s.flatten())) / s


WRAPPERS = {
    "vp-discrete-eps": lambda: VPDenoiser(vp_net(DISCRETE, "eps"), DISCRETE, "eps"),
    "vp-discrete-x0": lambda: VPDenoiser(vp_net(DISCRETE, "x0"), DISCRETE, "x0"),
    "vp-discrete-v": lambda: VPDenoiser(vp_net(DISCRETE, "v"), DISCRETE, "v"),
    "vp-continuous-eps": lambda: VPDenoiser(vp_net(CONTINUOUS, "eps", 1000.0), CONTINUOUS, "eps", t_scale=1000.0),
    "vp-continuous-v": lambda: VPDenoiser(vp_net(CONTINUOUS, "v"), CONTINUOUS, "v"),
    "ve-eps": lambda: VEDenoiser(ve_net),
    "flow": lambda: FlowDenoiser(flow_net, t_scale=1000.0),
    "edm": lambda: EDMPrecond(edm_net(0.5), sigma_data=0.5),
}


def _in_range(name, sigma):
    """Sigmas a wrapper's schedule can represent (a discrete table stops at its own sigma range)."""
    if name.startswith("vp-discrete"):
        return (sigma >= DISCRETE.sigma_min) & (sigma <= DISCRETE.sigma_max)
    return torch.ones_like(sigma, dtype=torch.bool)


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_every_wrapper_gives_back_the_exact_denoiser(name):
    sig = SIGMAS[_in_range(name, SIGMAS)]
    x = torch.randn(len(sig), 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    D = WRAPPERS[name]()
    assert torch.allclose(D(x, sig), exact_x0(x, sig), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["vp-discrete-v", "vp-discrete-x0", "flow", "edm"])
def test_pure_noise_rule_at_infinity(name):
    """At sigma = inf x holds the unit noise and D returns E[x0] = 0 (x0 and x are independent)."""
    if name == "edm":   # EDM's net sees c_noise = inf; an x0 of 0 at infinite noise is what it must give
        D = EDMPrecond(lambda x_in, c: torch.zeros_like(x_in), sigma_data=0.5)
    elif name.startswith("vp"):
        sched = DiscreteSchedule.named("scaled_linear", zero_terminal_snr=True)
        D = VPDenoiser(vp_net(sched, name.split("-")[-1]), sched, name.split("-")[-1])
    else:
        D = WRAPPERS[name]()
    noise = torch.randn(4, 5, dtype=torch.float64)
    out = D(noise, torch.full((4,), math.inf, dtype=torch.float64))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-9


def test_edm_preconditioning_gives_unit_variance_input_and_target():
    """Karras et al. 2022, appendix B.6: with data std sigma_data, c_in x and the target of F both have
    unit variance at every sigma (exact algebra, and by sampling)."""
    sd = 0.5
    D = EDMPrecond(lambda x, c: x, sigma_data=sd)
    s = torch.logspace(-3, 2, 50, dtype=torch.float64)
    c_skip, c_out, c_in = D.scalings(s)
    assert torch.allclose(c_in**2 * (sd**2 + s**2), torch.ones_like(s))
    assert torch.allclose(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2, torch.ones_like(s))
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(len(s), 20000, generator=g, dtype=torch.float64) * sd
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    target = D.target(x0, noise, s)
    assert ((target.var(1) - 1).abs() < 0.05).all()


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_loss_of_the_exact_denoiser_is_the_posterior_variance(name):
    """E[(F - F*)^2] = Var[x0 | x] / c_out^2 at fixed sigma; by sampling, within 3%."""
    D = WRAPPERS[name]()
    n = 40000
    sig = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64)
    sig = sig[_in_range(name, sig)]
    g = torch.Generator().manual_seed(2)
    for s in sig:
        x0 = torch.randn(n, 1, generator=g, dtype=torch.float64) * VAR**0.5
        loss = diffusion_loss(D, x0, sigma=s.expand(n), generator=g)
        c_out = torch.as_tensor(D.scalings(s.reshape(1))[1], dtype=torch.float64).reshape(-1)[0]
        expected = VAR * s**2 / (VAR + s**2) / c_out**2
        assert abs(loss.item() / expected.item() - 1) < 0.03, (name, s.item(), loss.item(), expected.item())


def test_min_snr_weights_closed_form():
    sig = torch.logspace(-2, 2, 40, dtype=torch.float64)
    snr, gamma = 1 / sig**2, 5.0
    net = lambda x, t: x
    w = lambda p: loss_weight(p, sig, "min_snr", gamma)
    assert torch.allclose(w(VPDenoiser(net, DISCRETE, "eps")), snr.clamp(max=gamma) / snr)
    assert torch.allclose(w(VPDenoiser(net, DISCRETE, "v")), snr.clamp(max=gamma) / (snr + 1))
    assert torch.allclose(w(VPDenoiser(net, DISCRETE, "x0")), snr.clamp(max=gamma))
    edm = EDMPrecond(net, sigma_data=0.5)
    assert torch.allclose(loss_weight(edm, sig, "edm"), torch.ones_like(sig))


def test_mask_averages_over_valid_elements_only():
    D = EDMPrecond(lambda x, c: torch.tanh(x) + 0.1 * c.reshape(-1, 1, 1), sigma_data=0.5)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 2, 10, generator=g)
    lengths = [10, 6, 3]
    mask = (torch.arange(10) < torch.tensor(lengths)[:, None]).float()[:, None, :]   # (B, 1, T)
    sigma, noise = torch.tensor([0.2, 1.0, 5.0]), torch.randn(3, 2, 10, generator=g)
    garbage = torch.where(mask.bool(), x0, torch.full_like(x0, 1e6))
    masked = diffusion_loss(D, garbage, mask=mask, sigma=sigma, noise=noise)
    err = [((D(add_noise(x0, noise, sigma), sigma, net_output=True) - D.target(x0, noise, sigma))[i, :, :n] ** 2)
           for i, n in enumerate(lengths)]
    assert torch.allclose(masked, torch.cat([e.flatten() for e in err]).mean())
    per_sample = diffusion_loss(D, garbage, mask=mask, sigma=sigma, noise=noise, reduction="none")
    assert torch.allclose(per_sample, torch.stack([e.mean() for e in err]))


def test_per_sample_generators_and_wrapped_modules():
    """Sample i's loss does not depend on its batch, and a DDP-style `.module` wrapper gives the same loss."""
    net = nn.Linear(4, 4)
    D = EDMPrecond(lambda x, c: net(x) * c.reshape(-1, 1).cos(), sigma_data=0.5)
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    batch = diffusion_loss(D, x0, generator=generators(9, 6), reduction="none")
    alone = diffusion_loss(D, x0[2:3], generator=generators(9, 6)[2:3], reduction="none")
    assert torch.allclose(batch[2:3], alone)

    class Wrapper(nn.Module):   # what DDP / accelerate put around a module
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *a, **k):
            return self.module(*a, **k)

    assert torch.equal(diffusion_loss(Wrapper(D), x0, generator=generators(9, 6)),
                       diffusion_loss(D, x0, generator=generators(9, 6)))
    loss = diffusion_loss(Wrapper(D), x0, generator=generators(9, 6))
    loss.backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_training_noise_level_distributions():
    u = torch.rand(200000, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    net = lambda x, c: x
    log_s = EDMPrecond(net, P_mean=-1.2, P_std=1.2).training_sigma(u).log()
    assert abs(log_s.mean() + 1.2) < 0.02 and abs(log_s.std() - 1.2) < 0.02
    s = VPDenoiser(net, DISCRETE, "eps").training_sigma(u)
    t = DISCRETE.sigma_to_t(s)
    assert torch.allclose(t, t.round(), atol=1e-6) and t.min() == 0 and t.max() == 999
    t = 1 / (1 + 1 / FlowDenoiser(net).training_sigma(u))
    assert torch.allclose(t, u, atol=1e-12)
    s = VEDenoiser(net, sigma_min=0.02, sigma_max=100).training_sigma(u)
    assert abs(s.log().mean().item() - (math.log(0.02) + math.log(100)) / 2) < 0.02


def test_loss_rejects_a_bare_network():
    with pytest.raises(TypeError, match="precond wrapper"):
        diffusion_loss(nn.Linear(2, 2), torch.zeros(2, 2))


def test_float_sigma_path_equals_tensor_path_and_subclasses_keep_their_scalings():
    """Samplers pass sigma as a float (coefficients in float math): same denoiser output as a (B,) tensor
    sigma; a subclass that overrides `scalings` alone is not given its parent's float formulas."""
    def net(x, c_noise):
        return torch.tanh(x) * (1 + 0.1 * c_noise.reshape(-1, 1))

    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = DiscreteSchedule.named("scaled_linear")
    wrappers = [EDMPrecond(net, sigma_data=0.7), VEDenoiser(net), VEDenoiser(net, prediction="x0"),
                FlowDenoiser(net, t_scale=1000), *(VPDenoiser(net, table, p) for p in ("eps", "x0", "v")), VPDenoiser(net, table, quantize=True)]
    for d in wrappers:
        for s in (0.01, 0.7, 3.0, 60.0):
            torch.testing.assert_close(d(x, s), d(x, torch.full((5,), s, dtype=torch.float64)), rtol=1e-12, atol=1e-12)

    class X0(EDMPrecond):
        def scalings(self, sigma):
            return 0.0, 1.0, EDMPrecond.scalings(self, sigma)[2]

    d = X0(net)
    torch.testing.assert_close(d(x, 2.0), d(x, torch.full((5,), 2.0, dtype=torch.float64)), rtol=0, atol=0)
    assert not torch.allclose(d(x, 2.0), EDMPrecond(net)(x, 2.0))
