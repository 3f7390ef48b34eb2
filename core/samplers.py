"""Samplers: pure functions `(denoiser, x, sigmas, ...) -> x0`, one per method, plus `sample` to pick one.

    x = start_latent(noise, sigmas)            # noise * sigmas[0]  (or the noise itself at sigma = inf)
    x0 = sample(denoiser, x, sigmas, "dpmpp_2m", generator=gens, cond={"text": emb})

`denoiser(x, sigma, **cond) -> x0_hat` with x = x0 + sigma * eps and sigma a (B,) tensor; `sigmas` is a
1-D tensor, strictly decreasing, ending in 0 (or at any sigma > 0 to stop early). Every step is written
in sigma space with Python-float coefficients: `sigmas` is read to the host once before the loop, so the
loop has no `.item()`, no branching on tensor values and no host-device sync, and the coefficients are
float64 whatever the dtype of x (fp32 and fp64 both work).

Rules shared by all methods:
- A step to sigma = 0 returns the denoiser output itself (the exact limit of every method's update).
- Multistep methods start at first order and, like diffusers, drop to lower order near the end when
  there are fewer than 15 steps (`lower_order_final`).
- Pure-noise start (sigmas[0] = inf; zero-terminal SNR, flow matching at t = 1): x holds the unit noise
  eps itself, the denoiser is called with sigma = inf on it, and the first step is taken in closed form,
  x1 = D + sigmas[1] * (sqrt(1 - eta^2) * eps + eta * z): the limit of the DDIM / ancestral step as
  sigma -> inf (eta = 0 for ODE methods, 1 for ddpm / sde methods, the method's eta otherwise). For a
  flow-matching model this equals the flow Euler step x + (t1 - 1) v.
- Noise comes from `generator`: one torch.Generator, or a list of B (one per sample, so a sample does not
  depend on the batch it is drawn in); None uses the global RNG.
- `callback({"i", "x", "sigma", "sigma_next", "denoised"})` after each step; `progress` shows a bar
  (None: polydiff.core.progress decides).
"""

from __future__ import annotations

import inspect
import itertools
import math

import torch

from . import progress as _progress
from .runtime import randn

# ---- shared plumbing ----

def _check_sigmas(sigmas) -> list[float]:
    sig = torch.as_tensor(sigmas).detach().double().cpu()
    if sig.ndim != 1 or len(sig) < 2:
        raise ValueError(f"sigmas must be a 1-D tensor of at least 2 values (n steps -> n + 1 values, "
                         f"last 0), got shape {tuple(sig.shape)}")
    sig = sig.tolist()
    if any(math.isnan(s) for s in sig) or sig[-1] < 0 or any(math.isinf(s) for s in sig[1:]):
        raise ValueError("sigmas must be >= 0 with no NaN; only sigmas[0] may be inf (a pure-noise start)")
    if any(b >= a for a, b in itertools.pairwise(sig)):
        raise ValueError("sigmas must be strictly decreasing (build them with polydiff.core.schedules)")
    return sig


class _Run:
    """The per-call context of a sampler: denoiser call with a (B,) sigma, noise, callback, bar."""

    def __init__(self, denoiser, x, sigmas, generator, cond, callback, progress, desc):
        self.denoiser, self.generator, self.cond, self.callback = denoiser, generator, cond or {}, callback
        if not (torch.is_tensor(x) and x.is_floating_point() and x.ndim >= 1):
            raise TypeError("x must be a floating-point tensor (B, ...) already at noise level sigmas[0]")
        self.sig = _check_sigmas(sigmas)
        self.batch, self.offset = x.shape[0], 0
        # our parameterisations take a float sigma (coefficients in float math); others get a (B,) tensor
        self.float_sigma = getattr(denoiser, "accepts_float_sigma", False) is True
        show = _progress.enabled() if progress is None else progress
        self.bar = (lambda n: _progress.progress(range(n), desc=desc)) if show else range

    def __call__(self, x, sigma: float):
        if self.float_sigma:
            return self.denoiser(x, float(sigma), **self.cond)
        return self.denoiser(x, x.new_full((self.batch,), sigma), **self.cond)

    def noise(self, x):
        return randn(x.shape, self.generator, device=x.device, dtype=x.dtype)

    def report(self, i, x, s, s_next, denoised):
        if self.callback is not None:
            self.callback({"i": i + self.offset, "x": x, "sigma": s, "sigma_next": s_next, "denoised": denoised})

    def start(self, x, eta: float = 0.0):
        """Take the closed-form step from sigma = inf if the grid starts there; returns (x, sigmas left)."""
        sig, eta = self.sig, min(eta, 1.0)
        if math.isinf(sig[0]):
            denoised, s1 = self(x, math.inf), sig[1]
            x = denoised + s1 * (math.sqrt(1 - eta**2) * x + (eta * self.noise(x) if eta > 0 else 0))
            self.report(0, x, sig[0], s1, denoised)
            sig, self.offset = sig[1:], 1
        return x, sig

    def steps(self, sig):
        return self.bar(len(sig) - 1)


def _churn(run, x, s, n, s_churn, s_tmin, s_tmax, s_noise):
    """EDM stochastic churn: raise sigma by gamma and add the matching fresh noise."""
    gamma = min(s_churn / n, 2**0.5 - 1) if s_tmin <= s <= s_tmax else 0.0
    if gamma <= 0:
        return x, s
    s_hat = s * (1 + gamma)
    return x + run.noise(x) * s_noise * math.sqrt(s_hat**2 - s**2), s_hat


def _ancestral(s, s_next, eta):
    """Split the step s -> s_next into a deterministic part down to sigma_down and fresh noise sigma_up
    (DDIM's sigma_t with eta, written in sigma space: sigma_up^2 = eta^2 s_next^2 (s^2 - s_next^2) / s^2)."""
    up = min(s_next, eta * math.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
    return math.sqrt(s_next**2 - up**2), up


# ---- first-order methods ----

def sample_euler(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """Euler on the probability-flow ODE dx/dsigma = (x - D) / sigma (Karras et al. 2022, alg. 2 without
    the correction); with s_churn > 0 the EDM stochastic sampler's first stage."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "euler")
    x, sig = run.start(x)
    n = len(sig) - 1
    for i in run.steps(sig):
        x, s = _churn(run, x, sig[i], n, s_churn, s_tmin, s_tmax, s_noise)
        denoised = run(x, s)
        x = torch.lerp(denoised, x, sig[i + 1] / s)   # D + (s_next/s)(x - D) = x + (s_next - s)(x - D)/s
        run.report(i, x, s, sig[i + 1], denoised)
    return x


def sample_ddim(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None, eta=0.0):
    """DDIM (Song et al. 2021). eta = 0 is deterministic and, in sigma space, the same update as Euler;
    eta = 1 is the DDPM posterior. Note: diffusers' DDIMScheduler steps to t - T // N, which is not the
    next timestep of trailing / linspace spacings when N does not divide T (diffusers #11347, #12633);
    this function always steps to the next sigma of the grid it is given."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "ddim")
    x, sig = run.start(x, eta)
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        down, up = _ancestral(s, s_next, eta)
        x = torch.lerp(denoised, x, down / s)
        if up > 0:
            x = x + up * run.noise(x)
        run.report(i, x, s, s_next, denoised)
    return x


def sample_euler_ancestral(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None,
                           eta=1.0, s_noise=1.0):
    """Euler ancestral (k-diffusion): an Euler step to sigma_down, then fresh noise of std sigma_up."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "euler_ancestral")
    x, sig = run.start(x, eta)
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        down, up = _ancestral(s, s_next, eta)
        x = torch.lerp(denoised, x, down / s)
        if up > 0:
            x = x + up * s_noise * run.noise(x)
        run.report(i, x, s, s_next, denoised)
    return x


def sample_ddpm(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None):
    """DDPM ancestral sampling (Ho et al. 2020, posterior variance beta_tilde) on any sigma grid: in sigma
    space the forward chain adds variance s^2 - s_next^2, so the posterior of x_next given x and x0 = D is
    N(D + (s_next/s)^2 (x - D), s_next^2 (1 - (s_next/s)^2)). Equal to ddim with eta = 1."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "ddpm")
    x, sig = run.start(x, 1.0)
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        ratio2 = (s_next / s) ** 2
        x = torch.lerp(denoised, x, ratio2)
        if s_next > 0:
            x = x + s_next * math.sqrt(1 - ratio2) * run.noise(x)
        run.report(i, x, s, s_next, denoised)
    return x


def sample_sde_euler_maruyama(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None,
                              s_noise=1.0):
    """Euler-Maruyama on the reverse-time SDE of the variance-exploding process sigma(t) = t (score-SDE
    view, Song et al. 2021): dx = -2 sigma score dsigma + sqrt(2 sigma |dsigma|) dw, score = (D - x) / sigma^2.
    The step to sigma = 0 returns D (the noise-free last step of Song et al.)."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "sde_euler_maruyama")
    x, sig = run.start(x, 1.0)
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        if s_next == 0:
            x = denoised
        else:
            x = x + 2 * (1 - s_next / s) * (denoised - x) + math.sqrt(2 * s * (s - s_next)) * s_noise * run.noise(x)
        run.report(i, x, s, s_next, denoised)
    return x


# ---- higher-order methods ----

def sample_heun(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """Heun's 2nd-order method (Karras et al. 2022, alg. 2; stochastic with s_churn > 0). 2N - 1 denoiser
    calls: the step to sigma = 0 is a plain Euler step."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "heun")
    x, sig = run.start(x)
    n = len(sig) - 1
    for i in run.steps(sig):
        x, s = _churn(run, x, sig[i], n, s_churn, s_tmin, s_tmax, s_noise)
        s_next = sig[i + 1]
        denoised = run(x, s)
        if s_next == 0:
            x = denoised
        else:
            x_euler = torch.lerp(denoised, x, s_next / s)
            denoised_next = run(x_euler, s_next)
            # x + (s_next - s) * mean of the slopes (x - D) / s at both ends; as (x_euler - D') / s_next =
            # (x - D) / s + (D - D') / s_next, that is x_euler + (s_next - s) / (2 s_next) * (D - D')
            x = torch.add(x_euler, denoised - denoised_next, alpha=(s_next - s) / (2 * s_next))
        run.report(i, x, s, s_next, denoised)
    return x


def sample_dpmpp_2m(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None):
    """DPM-Solver++(2M) (Lu et al. 2022), data prediction, in lambda = -log sigma: first step first order,
    then the multistep midpoint correction with r = h_prev / h."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "dpmpp_2m")
    x, sig = run.start(x)
    old, h_old = None, None
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            d = denoised if old is None else torch.add(denoised, denoised - old, alpha=h / (2 * h_old))
            x = torch.lerp(d, x, s_next / s)   # (s_next/s) x - expm1(-h) d, as 1 - e^-h = 1 - s_next/s
            old, h_old = denoised, h
        run.report(i, x, s, s_next, denoised)
    return x


def sample_dpmpp_3m(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None):
    """DPM-Solver++(3M) (Lu et al. 2022), data prediction: orders 1, 2, then 3 from the third step; with
    fewer than 15 steps the last two steps drop to orders 1 and 2 (as diffusers' lower_order_final).

    The third-order term integrates the Taylor expansion of D in lambda exactly:
    x_next = (s_next/s) x - phi1 D + (phi1/h + 1) D1 - ((phi1 + h)/h^2 - 1/2) D2 with D1 ~ h D' and
    D2 ~ h^2 D''. The divided difference (D1_0 - D1_1) / (r0 + r1) is h^2 D'' / 2, so D2 takes twice it.
    diffusers' DPMSolverMultistepScheduler (solver_order=3) and the reference dpm_solver code use it
    without the 2, which halves the D'' term; their 3M then converges at order 2, not 3, on the
    closed-form Gaussian test in tests/test_convergence.py (which checks this function's order 3)."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "dpmpp_3m")
    x, sig = run.start(x)
    n = len(sig) - 1
    hist = []   # [(denoised, h of the step that followed it)], newest last
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            phi1 = math.expm1(-h)
            order = min(3, len(hist) + 1)
            if n < 15:
                order = min(order, n - i)
            x_next = (s_next / s) * x - phi1 * denoised
            if order >= 2:
                r0 = hist[-1][1] / h
                d1_0 = (denoised - hist[-1][0]) / r0
                if order == 2:
                    x_next = x_next - 0.5 * phi1 * d1_0
                else:
                    r1 = hist[-2][1] / h
                    d1_1 = (hist[-1][0] - hist[-2][0]) / r1
                    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                    d2 = 2 * (d1_0 - d1_1) / (r0 + r1)   # ~ h^2 D''; see the docstring
                    x_next = x_next + (phi1 / h + 1) * d1 - ((phi1 + h) / h**2 - 0.5) * d2
            x = x_next
            hist = (hist + [(denoised, h)])[-2:]
        run.report(i, x, s, s_next, denoised)
    return x


def sample_dpmpp_2m_sde(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None,
                        eta=1.0, s_noise=1.0):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022), midpoint form; eta = 0 gives the ODE solver dpmpp_2m."""
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "dpmpp_2m_sde")
    x, sig = run.start(x, min(eta, 1.0))
    old, h_old = None, None
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        if s_next == 0:
            x = denoised
        else:
            h = math.log(s / s_next)
            eh = eta * h
            c = -math.expm1(-h - eh)
            x = (s_next / s) * math.exp(-eh) * x + c * denoised
            if old is not None:
                x = x + (0.5 * c * h / h_old) * (denoised - old)
            if eta > 0:
                x = x + run.noise(x) * (s_next * math.sqrt(-math.expm1(-2 * eh)) * s_noise)
            old, h_old = denoised, h
        run.report(i, x, s, s_next, denoised)
    return x


def _unipc_b(h: float, order: int) -> list[float]:
    """UniPC's b vector for B(h) = e^h - 1 ("bh2"), data prediction (Zhao et al. 2023, alg. 2/3)."""
    hh = -h
    b_h = math.expm1(hh)
    phi_k, fact, out = math.expm1(hh) / hh - 1, 1, []
    for k in range(1, order + 1):
        out.append(phi_k * fact / b_h)
        fact *= k + 1
        phi_k = phi_k / hh - 1 / fact
    return out


def sample_unipc(denoiser, x, sigmas, *, generator=None, cond=None, callback=None, progress=None, order=2,
                 corrector=True):
    """UniPC (Zhao et al. 2023): the UniP multistep predictor (B(h) = e^h - 1, "bh2", data prediction)
    plus the UniC corrector, which reuses the denoiser call at the predicted point (no extra calls) and
    raises the order by one. order 1 or 2; first order at the start and, like diffusers, lower order in
    the final steps under 15 steps; the last prediction is not corrected."""
    if order not in (1, 2):
        raise ValueError(f"unipc supports order 1 or 2, got {order}")
    run = _Run(denoiser, x, sigmas, generator, cond, callback, progress, "unipc")
    x, sig = run.start(x)
    n = len(sig) - 1
    hist_x, hist_d, hist_order = [], [], []   # per step: x given to the predictor, its D, predictor order
    for i in run.steps(sig):
        s, s_next = sig[i], sig[i + 1]
        denoised = run(x, s)
        if corrector and i > 0:   # UniC: redo the last step using D at its end point
            h = math.log(sig[i - 1] / s)
            b_h, m0 = math.expm1(-h), hist_d[-1]
            x_c = (s / sig[i - 1]) * hist_x[-1] - b_h * m0
            if hist_order[-1] == 1:
                x = x_c - b_h * 0.5 * (denoised - m0)
            else:
                rk = -math.log(sig[i - 2] / sig[i - 1]) / h
                b = _unipc_b(h, 2)
                rho0 = (b[0] - b[1]) / (1 - rk)
                x = x_c - b_h * (rho0 * (hist_d[-2] - m0) / rk + (b[0] - rho0) * (denoised - m0))
        if s_next == 0:
            x_new, p = denoised, 1
        else:
            h = math.log(s / s_next)
            p = min(order, i + 1, n - i if n < 15 else order)
            x_new = (s_next / s) * x - math.expm1(-h) * denoised
            if p == 2:
                rk = -math.log(sig[i - 1] / s) / h
                x_new = x_new - math.expm1(-h) * 0.5 * (hist_d[-1] - denoised) / rk
        hist_x, hist_d, hist_order = hist_x[-1:] + [x], hist_d[-1:] + [denoised], [p]
        run.report(i, x_new, s, s_next, denoised)
        x = x_new
    return x


SAMPLERS = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "euler_ancestral": sample_euler_ancestral,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_3m": sample_dpmpp_3m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
    "unipc": sample_unipc,
    "sde_euler_maruyama": sample_sde_euler_maruyama,
}
METHODS = (*SAMPLERS, "ode_adaptive")


def sample(denoiser, x: torch.Tensor, sigmas, method: str = "dpmpp_2m", generator=None, **opts) -> torch.Tensor:
    """Run sampler `method` from x (at sigmas[0]) down the grid `sigmas`; returns x at sigmas[-1].

    opts: `cond` (dict of keyword arguments for the denoiser), `callback`, `progress`, and the method's own
    options (ddim / euler_ancestral / dpmpp_2m_sde: eta; euler / heun: s_churn, s_tmin, s_tmax, s_noise;
    unipc: order, corrector). "ode_adaptive" is `polydiff.core.ode.sample_ode_adaptive`.
    """
    if method == "ode_adaptive":
        from .ode import sample_ode_adaptive
        return sample_ode_adaptive(denoiser, x, sigmas, generator=generator, **opts)
    fn = SAMPLERS.get(method)
    if fn is None:
        raise ValueError(f"unknown sampler {method!r}; use one of {', '.join(METHODS)}")
    allowed = [k for k in inspect.signature(fn).parameters if k not in ("denoiser", "x", "sigmas", "generator")]
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise TypeError(f"sampler {method!r} has no option {', '.join(unknown)}; its options are {', '.join(allowed)}")
    return fn(denoiser, x, sigmas, generator=generator, **opts)
