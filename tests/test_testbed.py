"""The analytic testbed: exact GMM denoiser/score/log-density, empirical toy denoiser, sliced W2."""

import math

import pytest
import torch
from polydiff.core.testbed import EmpiricalSet, GaussianMixture, sliced_wasserstein, toy_points, toy_set


pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(params=["isotropic", "diagonal", "full"])
def mixture(request):
    g = gen(1)
    if request.param == "isotropic":
        return GaussianMixture([1, 2, 3], torch.randn(3, 3, generator=g, dtype=torch.float64) * 2,
                               [0.1, 0.3, 0.5])
    return GaussianMixture.random(3, 4, g, full=request.param == "full")


def test_log_density_integrates_to_one_in_1d():
    m = GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [0.2, 0.5])
    grid = torch.linspace(-40, 40, 40001, dtype=torch.float64)[:, None]
    for sigma in (0.0, 0.5, 3.0):
        mass = torch.trapezoid(m.log_prob(grid, sigma).exp(), grid[:, 0])
        assert abs(mass.item() - 1) < 1e-8


def test_full_covariance_log_density_matches_torch_distribution(mixture):
    # independent reference: torch.distributions with covariance C_k + sigma^2 I built explicitly
    x = torch.randn(50, 3, generator=gen(2), dtype=torch.float64)
    w = mixture.log_weights.exp()
    covs = torch.diag_embed(mixture.evals) if mixture.evecs is None else \
        mixture.evecs @ torch.diag_embed(mixture.evals) @ mixture.evecs.transpose(1, 2)
    for sigma in (0.0, 0.3, 2.0):
        comps = torch.distributions.MultivariateNormal(mixture.means, covs + sigma**2 * torch.eye(3))
        ref = torch.distributions.MixtureSameFamily(torch.distributions.Categorical(w), comps).log_prob(x)
        assert torch.allclose(mixture.log_prob(x, sigma), ref, atol=1e-10)


def test_score_is_autograd_of_log_density_and_tweedie_holds(mixture):
    x = torch.randn(40, 3, generator=gen(3), dtype=torch.float64) * 2
    for sigma in (0.05, 0.4, 1.5, 20.0):
        xg = x.clone().requires_grad_()
        (grad,) = torch.autograd.grad(mixture.log_prob(xg, sigma).sum(), xg)
        assert torch.allclose(mixture.score(x, sigma), grad, atol=1e-9)
        # Tweedie: E[x0 | x] = x + sigma^2 grad log p_sigma(x); denoise() uses the posterior-mean formula
        assert torch.allclose(mixture.denoise(x, sigma), x + sigma**2 * grad, atol=1e-9)


def test_denoiser_matches_monte_carlo_posterior_mean():
    # self-normalised importance sampling of E[x0 | x]: x0 ~ prior, weights N(x; x0, sigma^2 I)
    m = GaussianMixture.random(2, 3, gen(4))
    x0 = m.sample(400_000, gen(5))
    x = torch.tensor([[0.5, -1.0], [2.0, 1.0], [-3.0, 0.0]], dtype=torch.float64)
    sigma = 1.0
    logw = -((x[:, None, :] - x0[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.softmax(logw, dim=1)
    mc = w @ x0
    ess = 1 / (w**2).sum(1)
    tol = 6 * x0.std(0).max() / ess.sqrt()[:, None]           # generous MC error bound per point
    assert ((mc - m.denoise(x, sigma)).abs() < tol).all()


def test_per_sample_sigma_equals_one_sigma_at_a_time(mixture):
    x = torch.randn(4, 3, generator=gen(6), dtype=torch.float64)
    sig = torch.tensor([0.0, 0.1, 1.0, 10.0], dtype=torch.float64)
    batched = mixture.denoise(x, sig)
    for i in range(4):
        assert torch.allclose(batched[i], mixture.denoise(x[i:i + 1], sig[i])[0], atol=1e-14)
    assert torch.allclose(mixture.denoise(x, 0.0), x, atol=1e-13)        # nothing to remove at sigma = 0


def test_samples_have_the_mixture_moments_and_modes(mixture):
    x, labels = mixture.sample(200_000, gen(7), return_labels=True)
    assert torch.allclose(x.mean(0), mixture.mean(), atol=0.03)
    assert torch.allclose(torch.cov(x.T), mixture.covariance(), atol=0.06)
    hist = torch.bincount(labels, minlength=mixture.n_components).double() / len(labels)
    assert torch.allclose(hist, mixture.log_weights.exp(), atol=0.01)
    # in 3-D, P(chi_3 > 3) = 2.9%: samples of a well-separated mixture fill the modes with that loss
    spread = GaussianMixture([1, 1], [[-10.0, 0, 0], [10.0, 0, 0]], [0.5, 1.0])
    hist = spread.mode_histogram(spread.sample(100_000, gen(8)), max_mahalanobis=3.0)
    assert torch.allclose(hist, torch.full((2,), 0.5 * (1 - 0.0292), dtype=torch.float64), atol=0.006)
    assert spread.mode_histogram(torch.zeros(10, 3)).sum() == 0     # stranded between modes: no mode


def test_bad_mixture_arguments_raise():
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1], [[0.0, 0.0]], [0.0])
    with pytest.raises(ValueError, match="covs must be"):
        GaussianMixture([1, 1], [[0.0], [1.0]], torch.ones(3))


@pytest.mark.parametrize("name", ["8gaussians", "checkerboard", "moons", "swissroll"])
def test_toy_empirical_denoiser_tiny_sigma_returns_nearest_point(name):
    toy = EmpiricalSet(toy_points(name, 3000, gen(9)), chunk=700)      # several chunks on purpose
    q = 2 * torch.randn(64, 2, generator=gen(10), dtype=torch.float64)
    nearest = toy.points[torch.cdist(q, toy.points).argmin(1)]
    assert torch.allclose(toy.denoise(q, 1e-4), nearest, atol=1e-9)
    assert torch.allclose(toy.denoise(q, 0.0), nearest, atol=1e-9)


def test_toy_empirical_denoiser_is_the_exact_softmax_and_tweedie():
    toy = toy_set("moons", 2500, gen(11))
    toy.chunk = 600
    q = torch.randn(32, 2, generator=gen(12), dtype=torch.float64)
    sigma = torch.rand(32, generator=gen(13), dtype=torch.float64) + 0.05
    w = torch.softmax(-torch.cdist(q, toy.points) ** 2 / (2 * sigma[:, None] ** 2), dim=1)
    assert torch.allclose(toy.denoise(q, sigma), w @ toy.points, atol=1e-12)
    qg = q.clone().requires_grad_()
    (grad,) = torch.autograd.grad(toy.log_prob(qg, sigma).sum(), qg)
    assert torch.allclose(toy.denoise(q, sigma), q + sigma[:, None] ** 2 * grad, atol=1e-10)
    # log_prob is a normalised density at every sigma
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-6, 6, 81, dtype=torch.float64)] * 2,
                                      indexing="ij"), -1).reshape(-1, 2)
    mass = toy.log_prob(grid, 0.3).exp().sum() * (12 / 80) ** 2
    assert abs(mass.item() - 1) < 1e-4


def test_sliced_w2_of_a_shift_is_norm_over_sqrt_d():
    # each projection of a shifted copy is W2 = |theta . s| exactly; E[(theta . s)^2] = |s|^2 / d
    a = torch.randn(3000, 4, generator=gen(14), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    sw = sliced_wasserstein(a[:500], a[:500] + shift, 4000, gen(15))
    assert abs(sw.item() - shift.norm().item() / 2) < 0.06          # 4 sd of the projection average
    # two independent Gaussian sets differing by a shift, with unequal sizes (merged-quantile path)
    b = torch.randn(2000, 4, generator=gen(16), dtype=torch.float64) + shift
    sw = sliced_wasserstein(a, b, 1000, gen(17))
    assert abs(sw.item() - shift.norm().item() / 2) < 0.1


def test_sliced_w2_identical_and_same_law():
    a = torch.randn(4000, 3, generator=gen(18), dtype=torch.float64)
    assert sliced_wasserstein(a, a[torch.randperm(4000, generator=gen(19))], 64, gen(20)) == 0
    b = torch.randn(4000, 3, generator=gen(21), dtype=torch.float64)
    assert sliced_wasserstein(a, b, 256, gen(22)) < 0.05                # sampling noise only
    # the merged-breakpoint integral equals the equal-size formula when one set is a repeated copy
    sw_rep = sliced_wasserstein(a[:1000], b[:1000].repeat(3, 1), 128, gen(23))
    sw_eq = sliced_wasserstein(a[:1000], b[:1000], 128, gen(23))
    assert math.isclose(sw_rep.item(), sw_eq.item(), rel_tol=1e-10)


def test_denoiser_limit_at_infinite_sigma_is_the_mixture_mean(mixture):
    x = torch.randn(3, 3, generator=gen(24), dtype=torch.float64)
    at_inf = mixture.denoise(x, torch.full((3,), float("inf"), dtype=torch.float64))
    assert torch.allclose(at_inf, mixture.mean().expand(3, 3), atol=1e-12)
    assert torch.allclose(mixture.denoise(x, 1e7), at_inf, atol=1e-6)
