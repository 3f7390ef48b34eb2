"""Guidance and mask wrappers: exact identities, interval gating, rescale, and masked sampling."""

import pytest
import torch
from polydiff.core.guidance import cfg_denoiser, masked_denoiser, masked_sample, segment_mask
from polydiff.core.samplers import sample
from polydiff.core.schedules import karras_sigmas
from polydiff.core.testbed import GaussianMixture


pytestmark = pytest.mark.usefixtures("one_thread")


MIX = GaussianMixture([1, 2, 1], [[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], [0.3, 0.5, 0.2])
PARTS = [GaussianMixture([1.0], MIX.means[k:k + 1], MIX.evals[k:k + 1]) for k in range(3)]


class ClassDenoiser:
    """Exact class-conditional denoiser of MIX: label k -> component k, label -1 -> the whole mixture."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma, label):
        self.calls += 1
        out = MIX.denoise(x, sigma)
        for k, part in enumerate(PARTS):
            out = torch.where((label == k)[:, None], part.denoise(x, sigma), out)
        return out


def gen(seed):
    return torch.Generator().manual_seed(seed)


def setup(batch=6):
    x = 3 * torch.randn(batch, 2, generator=gen(0), dtype=torch.float64)
    sigma = torch.linspace(0.1, 5.0, batch, dtype=torch.float64)
    cond = {"label": torch.arange(batch) % 3}
    uncond = {"label": torch.full((batch,), -1)}
    return x, sigma, cond, uncond


def test_cfg_scale_one_is_the_conditional_denoiser_exactly():
    x, sigma, cond, uncond = setup()
    den = ClassDenoiser()
    guided = cfg_denoiser(den, 1.0, cond, uncond, rescale=0.7, interval=(0.5, 2.0))
    assert torch.equal(guided(x, sigma), den(x, sigma, **cond))


def test_cfg_matches_the_formula_batched_and_unbatched():
    x, sigma, cond, uncond = setup()
    den = ClassDenoiser()
    d_c, d_u = den(x, sigma, **cond), den(x, sigma, **uncond)
    w = torch.tensor([0.0, 0.5, 2.0, 3.0, 7.5, -1.0], dtype=torch.float64)
    den.calls = 0
    batched = cfg_denoiser(den, w, cond, uncond)(x, sigma)
    assert den.calls == 1                                    # cond and uncond in one doubled batch
    assert torch.allclose(batched, d_u + w[:, None] * (d_c - d_u), atol=1e-12)
    den.calls = 0
    split = cfg_denoiser(den, w, cond, uncond, batch=False)(x, sigma)
    assert den.calls == 2 and torch.allclose(split, batched, atol=1e-12)


def test_cfg_negative_conditioning_moves_away_from_the_negative_class():
    # uncond = a negative label: the guided x0 is pushed past the positive class mean, away from the other
    x = torch.zeros(4, 2, dtype=torch.float64)
    sigma = torch.full((4,), 3.0, dtype=torch.float64)
    den = ClassDenoiser()
    pos, neg = {"label": torch.full((4,), 1)}, {"label": torch.full((4,), 0)}
    plain = den(x, sigma, **pos)
    guided = cfg_denoiser(den, 3.0, pos, neg)(x, sigma)
    to_neg = lambda y: (y - MIX.means[0]).norm(dim=1)
    assert (to_neg(guided) > to_neg(plain) + 0.5).all()


def test_guidance_interval_gates_per_sample():
    x, sigma, cond, uncond = setup()                        # sigmas 0.1 ... 5.0
    den = ClassDenoiser()
    full = cfg_denoiser(den, 4.0, cond, uncond)(x, sigma)
    gated = cfg_denoiser(den, 4.0, cond, uncond, interval=(1.0, 3.04))(x, sigma)
    d_c = den(x, sigma, **cond)
    inside = (sigma > 1.0) & (sigma <= 3.04)
    assert 0 < inside.sum() < len(sigma)
    assert torch.equal(gated[~inside], d_c[~inside])
    assert torch.equal(gated[inside], full[inside])
    den.calls = 0                                            # all outside: the uncond pass is skipped
    out = cfg_denoiser(den, 4.0, cond, uncond, interval=(10.0, 20.0))(x, sigma)
    assert den.calls == 1 and torch.equal(out, d_c)


def test_rescale_zero_is_plain_cfg_and_one_matches_the_conditional_std():
    x, sigma, cond, uncond = setup()
    den = ClassDenoiser()
    plain = cfg_denoiser(den, 5.0, cond, uncond)(x, sigma)
    assert torch.equal(cfg_denoiser(den, 5.0, cond, uncond, rescale=0.0)(x, sigma), plain)
    # with phi = 1 the v-prediction of the output has the conditional prediction's per-sample std
    sd = 0.5
    out = cfg_denoiser(den, 5.0, cond, uncond, rescale=1.0, sigma_data=sd)(x, sigma)
    s = sigma[:, None]
    to_v = lambda d: (sd * (x - d) / s - s * d / sd) / (sd**2 + s**2).sqrt()
    assert torch.allclose(to_v(out).std(1), to_v(den(x, sigma, **cond)).std(1), rtol=1e-9)
    assert not torch.allclose(to_v(plain).std(1), to_v(den(x, sigma, **cond)).std(1), rtol=1e-3)
    half = cfg_denoiser(den, 5.0, cond, uncond, rescale=0.5, sigma_data=sd)(x, sigma)
    assert torch.allclose(half, 0.5 * (out + plain), atol=1e-9)   # linear in phi


def test_segment_mask_for_continuation_and_inbetweening():
    m = segment_mask((2, 3, 10), dim=2, known=[(0, 2), (8, 10)])
    assert m.dtype == torch.bool and m[..., :2].all() and m[..., 8:].all() and not m[..., 2:8].any()


def test_masked_denoiser_replaces_input_and_output():
    seen = {}

    def spy(x, sigma):
        seen["x"] = x.clone()
        return torch.full_like(x, 7.0)

    known = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    mask = torch.tensor([True, False, True])
    noise = torch.tensor([[0.5, 0.5, -1.0]], dtype=torch.float64)
    wrapped = masked_denoiser(spy, known, mask, noise=noise)
    x = torch.tensor([[9.0, 9.0, 9.0]], dtype=torch.float64)
    out = wrapped(x, torch.tensor([2.0], dtype=torch.float64))
    assert torch.equal(seen["x"], torch.tensor([[2.0, 9.0, 1.0]], dtype=torch.float64))
    assert torch.equal(out, torch.tensor([[1.0, 7.0, 3.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match="does not broadcast"):
        masked_denoiser(spy, known, torch.ones(2, dtype=torch.bool))


@pytest.mark.parametrize("method", ["euler", "heun", "dpmpp_2m", "dpmpp_3m", "euler_ancestral", "dpmpp_2m_sde",
                                    "unipc", "ddpm", "ode_adaptive"])
@pytest.mark.parametrize("resample", [1, 3])
def test_masked_sampling_keeps_the_known_region_bitwise(method, resample):
    x0 = MIX.sample(8, gen(1), dtype=torch.float32).repeat(1, 3)            # (8, 6), float32
    mask = torch.tensor([True, False, True, True, False, False])
    big = GaussianMixture(MIX.log_weights.exp(), MIX.means.repeat(1, 3), MIX.evals.repeat(1, 3))
    sigmas = karras_sigmas(6, 0.01, 20.0).float()
    x = 20.0 * torch.randn(8, 6, generator=gen(2))
    opts = {"rtol": 1e-2, "atol": 1e-2} if method == "ode_adaptive" else {}
    out = masked_sample(big, x, sigmas, x0, mask, method=method, generator=gen(3), resample=resample, jump=2,
                        **opts)
    assert torch.equal(out[:, mask], x0[:, mask])
    assert torch.isfinite(out).all() and not torch.equal(out[:, ~mask], x0[:, ~mask])


def test_repaint_resampling_approaches_the_exact_gaussian_conditional():
    # x ~ N(0, [[1, .9], [.9, 1]]), x_1 = 2 known: x_2 | x_1 ~ N(1.8, 0.19). Replacement alone is
    # biased (the unknown coordinate never sees the known one at high noise); RePaint's resampling
    # harmonises the two, and its error shrinks with the number of repeats.
    cov = torch.tensor([[[1.0, 0.9], [0.9, 1.0]]], dtype=torch.float64)
    gauss = GaussianMixture([1.0], [[0.0, 0.0]], cov)
    n = 1500
    known = torch.zeros(n, 2, dtype=torch.float64)
    known[:, 0] = 2.0
    mask = torch.tensor([True, False])
    sigmas = karras_sigmas(12, 0.002, 80.0)
    errors = []
    for resample in (1, 4, 16):
        x = 80.0 * torch.randn(n, 2, generator=gen(4), dtype=torch.float64)
        out = masked_sample(gauss, x, sigmas, known, mask, method="euler", generator=gen(5), resample=resample)
        errors.append(abs(out[:, 1].mean().item() - 1.8))
        if resample == 16:
            assert abs(out[:, 1].std().item() - 0.19**0.5) < 0.05
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.15


def test_cfg_composes_with_samplers_per_sample_generators():
    # guided sampling of a batch equals guided sampling of each sample alone (per-sample generators)
    den = ClassDenoiser()
    labels = torch.tensor([0, 1, 2, 1])
    sigmas = karras_sigmas(8, 0.01, 20.0)
    x = 20.0 * torch.randn(4, 2, generator=gen(6), dtype=torch.float64)
    gens = lambda: [gen(10 + i) for i in range(4)]
    guided = cfg_denoiser(den, 2.0, {"label": labels}, {"label": torch.full((4,), -1)})
    batch = sample(guided, x, sigmas, "euler_ancestral", generator=gens(), progress=False)
    for i in range(4):
        one = cfg_denoiser(den, 2.0, {"label": labels[i:i + 1]}, {"label": torch.full((1,), -1)})
        alone = sample(one, x[i:i + 1], sigmas, "euler_ancestral", generator=[gens()[i]], progress=False)
        assert torch.allclose(alone, batch[i:i + 1], atol=1e-12)


def test_masks_compose_around_guidance_and_pure_noise_starts():
    # masked_denoiser(cfg_denoiser(D)) with rescale, started at sigma = inf (x = unit noise)
    den = ClassDenoiser()
    labels = torch.tensor([0, 1, 2, 1])
    guided = cfg_denoiser(den, 3.0, {"label": labels}, {"label": torch.full((4,), -1)}, rescale=0.7)
    known = torch.tensor([[1.0, 0.0]] * 4, dtype=torch.float64)
    mask = torch.tensor([True, False])
    sigmas = torch.cat([torch.tensor([float("inf")], dtype=torch.float64), karras_sigmas(8, 0.01, 20.0)])
    x = torch.randn(4, 2, generator=gen(7), dtype=torch.float64)
    for method in ("euler", "dpmpp_2m", "ode_adaptive"):
        out = masked_sample(guided, x, sigmas, known, mask, method=method, generator=gen(8))
        assert torch.isfinite(out).all() and torch.equal(out[:, 0], known[:, 0])
