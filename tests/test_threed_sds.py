"""Score distillation against closed forms for Gaussian data (the exact eps-predictor is known)."""

import pytest
import torch
from polydiff.threed.sds import (
    DenoiserPrior,
    ImagePrior,
    guided_eps,
    perp_neg_eps,
    sample_timesteps,
    score_distillation,
    sds_gradient,
    sds_surrogate_loss,
    sds_weight,
    vsd_gradient,
)

T = 1000
ABAR = torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, T, dtype=torch.float64), 0)


class GaussianPrior:
    """Data x0 ~ N(mu, s0^2 I) where the 'text embedding' is mu itself: the exact eps-predictor is
    E[eps | x_t] = b (x_t - a mu) / (a^2 s0^2 + b^2), a = sqrt(abar_t), b = sqrt(1 - abar_t)."""

    def __init__(self, s0=0.5):
        self.s0, self.alphas_cumprod = s0, ABAR

    def encode_text(self, prompts):
        return torch.stack([torch.tensor([float(len(p)), -1.0], dtype=torch.float64) for p in prompts])

    def encode_images(self, images):
        return images * 2.0 - 1.0

    def predict_eps(self, x_t, t, mu):
        a = ABAR[t].sqrt().reshape(-1, *[1] * (x_t.dim() - 1)).to(x_t.dtype)
        b = (1 - ABAR[t]).sqrt().reshape(a.shape).to(x_t.dtype)
        return b * (x_t - a * mu) / (a ** 2 * self.s0 ** 2 + b ** 2)


def expected_gain(t, s0, weighting="sds"):
    """E_eps[grad] = gain(t) * (x - mu) for the Gaussian prior: with x_t = a x + b eps and v = a^2 s0^2 + b^2,
    eps_hat - eps = a b (x - mu) / v + (b^2 / v - 1) eps, and the eps term has mean zero."""
    abar = ABAR[t]
    a, b = abar.sqrt(), (1 - abar).sqrt()
    return sds_weight(abar, weighting) * a * b / (a ** 2 * s0 ** 2 + b ** 2)


def test_gaussian_prior_satisfies_the_protocol_and_denoiser_prior_matches_it():
    prior = GaussianPrior(0.5)
    assert isinstance(prior, ImagePrior)
    mu = torch.tensor([0.3, -0.2, 0.7], dtype=torch.float64)
    # the same Gaussian as a sigma-space denoiser: D(x, sigma) = mu + s0^2 / (s0^2 + sigma^2) (x - mu)
    den = DenoiserPrior(lambda x, sigma, mu: mu + 0.25 / (0.25 + sigma[:, None] ** 2) * (x - mu),
                        lambda prompts: {"mu": mu}, ABAR)
    x_t = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([5, 200, 600, 990])
    assert torch.allclose(den.predict_eps(x_t, t, {"mu": mu}), prior.predict_eps(x_t, t, mu), atol=1e-10)
    with pytest.raises(ValueError, match="non-empty"):
        den.encode_text([""])


@pytest.mark.parametrize("weighting", ["sds", "uniform", "fantasia3d"])
def test_sds_gradient_matches_closed_form_at_fixed_t(weighting):
    prior, n = GaussianPrior(0.5), 20000
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.5, -0.5, 0.0, 1.0], dtype=torch.float64)
    x = torch.tensor([1.5, 0.5, -1.0, 0.2], dtype=torch.float64)
    for t_val in (50, 400, 900):
        t = torch.full((n,), t_val)
        noise = torch.randn(n, 4, generator=g, dtype=torch.float64)
        grad = sds_gradient(prior, x.expand(n, 4), t, noise, mu, weighting=weighting)
        expect = expected_gain(t_val, 0.5, weighting) * (x - mu)
        # exact per-coordinate std of one draw: w(t) |b^2 / v - 1|
        abar = ABAR[t_val]
        v = abar * 0.25 + 1 - abar
        std = sds_weight(abar, weighting) * abs((1 - abar) / v - 1) / n ** 0.5
        z = (grad.mean(0) - expect) / std
        assert z.abs().max() < 4.5, (t_val, z)


def test_sds_gradient_matches_closed_form_over_a_t_range():
    prior, n = GaussianPrior(0.3), 40000
    g = torch.Generator().manual_seed(1)
    mu = torch.zeros(3, dtype=torch.float64)
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    t = sample_timesteps(n, T, (0.2, 0.8), generator=g)
    assert t.min() >= round(0.2 * 999) and t.max() <= round(0.8 * 999)
    grad = sds_gradient(prior, x.expand(n, 3), t, torch.randn(n, 3, generator=g, dtype=torch.float64), mu)
    ts = torch.arange(round(0.2 * 999), round(0.8 * 999) + 1)
    expect = expected_gain(ts, 0.3).mean() * (x - mu)
    se = grad.std(0) / n ** 0.5
    assert ((grad.mean(0) - expect) / se).abs().max() < 4.5


def optimise_free_point(prior, cond, uncond=None, scale=1.0, form="uncond", steps=400, batch=64, seed=0, **kw):
    """SGD on a free 'image' through the surrogate loss; returns the Polyak average of the second half."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(1, cond.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.5)
    avg = torch.zeros_like(x)
    for i in range(steps):
        xb = x.expand(batch, -1)
        t = sample_timesteps(batch, T, (0.05, 0.95), generator=g)
        noise = torch.randn(xb.shape, generator=g, dtype=torch.float64)
        grad = sds_gradient(prior, xb, t, noise, cond, uncond, scale, form, **kw)
        opt.zero_grad()
        (sds_surrogate_loss(xb, grad) / batch).backward()
        opt.step()
        if i >= steps // 2:
            avg += x.detach() / (steps - steps // 2)
    return avg[0]


def test_sds_on_a_free_point_converges_to_the_mode():
    mu = torch.tensor([0.4, -0.6, 0.9], dtype=torch.float64)
    x = optimise_free_point(GaussianPrior(0.5), mu)
    assert (x - mu).abs().max() < 0.03


def test_cfg_fixed_points_of_both_forms():
    prior = GaussianPrior(0.5)
    mu_c = torch.tensor([0.5, 0.0], dtype=torch.float64)
    mu_u = torch.tensor([0.0, 0.2], dtype=torch.float64)
    w = 2.0
    expect = mu_c + w * (mu_c - mu_u)                       # == mu_u + (1 + w) (mu_c - mu_u)
    x_cond = optimise_free_point(prior, mu_c, mu_u, scale=w, form="cond")
    x_uncond = optimise_free_point(prior, mu_c, mu_u, scale=1.0 + w, form="uncond", seed=1)
    assert (x_cond - expect).abs().max() < 0.05
    assert (x_uncond - expect).abs().max() < 0.05
    # and the two spellings are the same numbers
    eu, ec = torch.randn(2, 5, 3).unbind(0)
    assert torch.allclose(guided_eps(eu, ec, 1.0 + w, "uncond"), guided_eps(eu, ec, w, "cond"), atol=1e-6)


def test_surrogate_loss_gradient_is_exactly_the_sds_gradient():
    x = torch.randn(3, 4, 8, 8, requires_grad=True)
    grad = torch.randn(3, 4, 8, 8)
    loss = sds_surrogate_loss(x, grad)
    loss.backward()
    assert torch.allclose(x.grad, grad, rtol=0, atol=1e-6)
    assert torch.allclose(loss, 0.5 * grad.pow(2).sum(), rtol=1e-5)


def test_score_distillation_chains_through_the_image_encoder():
    prior = GaussianPrior(0.5)
    images = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    mu = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    loss, info = score_distillation(prior, images, mu, cfg_scale=1.0, generator=torch.Generator().manual_seed(3))
    loss.backward()
    g = torch.Generator().manual_seed(3)
    t = sample_timesteps(2, T, (0.02, 0.98), generator=g)
    noise = torch.randn((2, 3, 4, 4), generator=g).to(torch.float64)
    grad = sds_gradient(prior, images.detach() * 2 - 1, t, noise, mu)
    assert torch.equal(info["t"], t)
    assert torch.allclose(images.grad, 2.0 * grad, atol=1e-10)     # d x / d image = 2 for x = 2 image - 1


def test_perp_neg():
    g = torch.Generator().manual_seed(0)
    eu, ec = torch.randn(2, 4, 3, 8, 8, generator=g).unbind(0)
    d_c = ec - eu
    plain = guided_eps(eu, ec, 7.5)
    assert torch.allclose(perp_neg_eps(eu, ec, [], [], 7.5), plain)
    # a negative along the positive direction is ignored entirely
    assert torch.allclose(perp_neg_eps(eu, ec, [eu + 0.7 * d_c], [1.0], 7.5), plain, atol=1e-5)
    # the change a negative makes is orthogonal to the positive direction, per image
    change = perp_neg_eps(eu, ec, [eu + torch.randn(4, 3, 8, 8, generator=g)], [0.5], 7.5) - plain
    cos = (change.flatten(1) * d_c.flatten(1)).sum(1) / (change.flatten(1).norm(dim=1) * d_c.flatten(1).norm(dim=1))
    assert cos.abs().max() < 1e-5 and change.abs().max() > 0.1


def test_timestep_annealing():
    g = torch.Generator().manual_seed(0)
    early = sample_timesteps(5000, T, (0.02, 0.98), step=0, total_steps=100, anneal="linear", generator=g)
    late = sample_timesteps(5000, T, (0.02, 0.98), step=100, total_steps=100, anneal="linear", t_max_end=0.5,
                            generator=g)
    mid = sample_timesteps(5000, T, (0.02, 0.98), step=25, total_steps=100, anneal="sqrt", t_max_end=0.5,
                           generator=g)
    assert early.max() > 950 and late.max() <= round(0.5 * 999) and late.min() >= round(0.02 * 999)
    assert mid.max() <= round((0.98 - 0.48 * 0.5) * 999)            # sqrt(0.25) = 0.5 of the way
    with pytest.raises(ValueError, match="t_range"):
        sample_timesteps(1, T, (0.9, 0.1))


def test_vsd_gradient_vanishes_when_phi_matches_the_prior():
    prior = GaussianPrior(0.5)
    mu = torch.tensor([0.3, 0.1], dtype=torch.float64)
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.randint(0, T, (16,))
    noise = torch.randn(16, 2, dtype=torch.float64)
    # particles distributed like the data: phi is then the data's own eps-predictor, and VSD stops
    vsd = vsd_gradient(prior, lambda x_t, t, e: prior.predict_eps(x_t, t, e), x, t, noise, mu)
    assert vsd.abs().max() == 0
    assert sds_gradient(prior, x, t, noise, mu).abs().max() > 0.01    # SDS would still pull to the mode


def test_empty_prompts_are_refused_with_a_fix():
    from polydiff.threed.sds import check_prompts

    for bad in ("", "   ", [], ["a red cube", ""], [None]):
        with pytest.raises(ValueError, match="a red cube"):
            check_prompts(bad)
    assert check_prompts("a red cube") == ["a red cube"]
