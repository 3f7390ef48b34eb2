"""Noise schedules, all seen in the one sigma space the samplers use.

A sample at noise level sigma is `x = x0 + sigma * eps` (k-diffusion / EDM). A variance-preserving (VP)
model sees `x_vp = alpha * x0 + sigma_vp * eps` with `alpha**2 + sigma_vp**2 = 1`; the two meet at
`sigma = sigma_vp / alpha`, so `alpha = 1 / sqrt(1 + sigma**2)` and `x_vp = alpha * x`. A flow-matching
model sees `x_t = (1 - t) * x0 + t * eps`, so `sigma = t / (1 - t)` and `x_t = x / (1 + sigma)`.

Schedules only make `sigmas`: a 1-D float64 tensor, strictly decreasing, ending in 0 (n steps -> n + 1
values). Samplers only consume them.

Infinity: zero-terminal-SNR schedules and flow matching at t = 1 start at pure noise, sigma = inf.
The rule, used by every sampler and every wrapper in `precond`: where sigma is inf, `x` holds the unit
noise itself (the limit of x / sigma), not x0 + inf * eps. `start_latent(noise, sigmas)` builds the start
for either case. A sampler takes the step from inf to sigmas[1] in closed form (see `samplers`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

SPACINGS = ("leading", "linspace", "trailing")


# ---- discrete beta schedules (float64, one value per training timestep) ----

def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM (Ho et al. 2020)."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)


def scaled_linear_betas(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                        beta_end: float = 0.012) -> torch.Tensor:
    """Stable Diffusion: sqrt(beta) is linear in t."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2


def cosine_betas(num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021: alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2), betas capped at max_beta."""
    t = torch.arange(num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def sigmoid_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas following a sigmoid over [-6, 6] between beta_start and beta_end (GeoDiff; diffusers "sigmoid")."""
    ramp = torch.sigmoid(torch.linspace(-6, 6, num_train_timesteps, dtype=torch.float64))
    return beta_start + ramp * (beta_end - beta_start)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2024 (Alg. 1): shift and scale sqrt(alpha_bar) so the last timestep has SNR exactly 0
    (sigma = inf) while the first is unchanged. Models for such schedules should be v- or x0-predictors."""
    sqrt_ab = torch.cumprod(1 - betas.double(), 0).sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    ab = sqrt_ab**2
    alphas = torch.cat([ab[:1], ab[1:] / ab[:-1]])
    return 1 - alphas


BETAS = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas,
         "sigmoid": sigmoid_betas}


def _count_below(knots: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """How many of the sorted `knots` are <= x, for each x (B,)."""
    if x.numel() * len(knots) <= 2**16:   # torch.searchsorted takes ms on some small CPU inputs
        return (knots <= x[:, None]).sum(1)
    return torch.searchsorted(knots, x, right=True)


class DiscreteSchedule:
    """A trained discrete VP schedule (T timesteps 0..T-1) seen in sigma space.

    `sigmas_table[t] = sqrt((1 - alpha_bar[t]) / alpha_bar[t])`, increasing in t (inf at the end of a
    zero-terminal-SNR schedule). Fractional timesteps are interpolated linearly in log sigma, both ways, so
    `sigma_to_t(t_to_sigma(t)) == t` (diffusers' `_sigma_to_t` uses the same rule).
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).flatten()
        if len(ac) < 2 or not bool(((ac[1:] < ac[:-1]) & (ac >= 0)[1:]).all()):
            raise ValueError("alphas_cumprod must be a strictly decreasing 1-D table of >= 2 values in [0, 1]")
        self.alphas_cumprod = ac
        self.sigmas_table = ((1 - ac) / ac).sqrt()       # (T,)
        self.log_sigmas = self.sigmas_table.log()
        self.zero_terminal_snr = bool(torch.isinf(self.sigmas_table[-1]))
        self._np_log_sigmas = (self.log_sigmas[:-1] if self.zero_terminal_snr else self.log_sigmas).numpy()
        self._np_grid = np.arange(len(self._np_log_sigmas), dtype=np.float64)
        self._cache: dict = {}

    @classmethod
    def from_betas(cls, betas: torch.Tensor) -> DiscreteSchedule:
        return cls(torch.cumprod(1 - torch.as_tensor(betas, dtype=torch.float64), 0))

    @classmethod
    def named(cls, name: str = "linear", num_train_timesteps: int = 1000, zero_terminal_snr: bool = False,
              **kw) -> DiscreteSchedule:
        """"linear" (DDPM), "scaled_linear" (Stable Diffusion), "cosine", "sigmoid"; kw go to the beta maker."""
        if name not in BETAS:
            raise ValueError(f"unknown beta schedule {name!r}; use one of {sorted(BETAS)}")
        betas = BETAS[name](num_train_timesteps, **kw)
        return cls.from_betas(rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas)

    @property
    def num_train_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas_table[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas_table[-1])

    def _log_sigmas(self, device, finite: bool = True) -> torch.Tensor:
        """The (finite) log sigmas on `device`, cached, so a wrapper on CUDA does no copies per step."""
        key = (torch.device(device), finite)
        if key not in self._cache:
            ls = self.log_sigmas[:-1] if finite and self.zero_terminal_snr else self.log_sigmas
            self._cache[key] = ls.to(key[0])
        return self._cache[key]

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        ls = self._log_sigmas(t.device, finite=False)
        t = t.clamp(0, len(ls) - 1)
        lo = t.floor().clamp(max=len(ls) - 2).long()    # the knots are 0..T-1: no search needed
        w = t - lo
        y = ls[lo] + w * (ls[lo + 1] - ls[lo])           # inf inside the last interval of a zero-SNR table
        return torch.where(w == 0, ls[lo], torch.where(w == 1, ls[lo + 1], y)).exp()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of `t_to_sigma`, clamped to [0, T-1]; sigma = inf maps to the last timestep (with zero
        terminal SNR every finite sigma maps at or below T-2). Kept to a dozen small ops: wrappers call it
        on every denoiser evaluation."""
        sigma = torch.as_tensor(sigma).detach()
        if sigma.device.type != "cpu":
            return self._sigma_to_t_torch(sigma)
        # no device to wait for on the CPU: numpy's interp is one call where torch needs a dozen ops
        with np.errstate(divide="ignore"):
            log_sigma = np.log(sigma.double().numpy())
        t = np.interp(log_sigma, self._np_log_sigmas, self._np_grid)
        if self.zero_terminal_snr:
            t = np.where(log_sigma == np.inf, self.num_train_timesteps - 1.0, t)
        return torch.from_numpy(np.asarray(t, dtype=np.float64))

    def scalar_sigma_to_t(self, sigma: float) -> float:
        """`sigma_to_t` for one finite sigma as a Python float (the samplers' per-call fast path)."""
        return float(np.interp(math.log(sigma), self._np_log_sigmas, self._np_grid))

    def _sigma_to_t_torch(self, sigma: torch.Tensor) -> torch.Tensor:
        """`sigma_to_t` in torch ops on sigma's device (no host sync)."""
        log_sigma = sigma.double().log()
        ls = self._log_sigmas(log_sigma.device)
        x = log_sigma.reshape(-1).clamp(ls[0], ls[-1])
        lo = _count_below(ls[1:-1], x)                     # segment [lo, lo + 1] holds x
        a, b = ls[lo], ls[lo + 1]
        t = (lo + (x - a) / (b - a)).reshape(log_sigma.shape)
        if self.zero_terminal_snr:
            t = torch.where(log_sigma == math.inf, self.num_train_timesteps - 1.0, t)
        return t

    def timesteps(self, n: int, spacing: str = "leading", steps_offset: int = 0) -> torch.Tensor:
        """n timesteps, decreasing (float64). leading: (i * T//n) + offset (DDIM / SD); trailing:
        round(T - i * T/n) - 1, which starts at T-1 (Lin et al. 2024); linspace: n points from T-1 down to 0
        (diffusers' Euler uses linspace(0, T-1, n) reversed, equal for n >= 2; for n = 1 it gives t = 0, a
        single step from almost clean data, which is never what is wanted, so here n = 1 starts at T-1)."""
        T = self.num_train_timesteps
        if spacing not in SPACINGS:
            raise ValueError(f"unknown timestep spacing {spacing!r}; use one of {SPACINGS}")
        if not 1 <= n <= T:
            raise ValueError(f"number of steps must be in 1..{T} for this {T}-step schedule, got {n}")
        i = torch.arange(n, dtype=torch.float64)
        if spacing == "leading":
            if not 0 <= (n - 1) * (T // n) + steps_offset < T:
                raise ValueError(f"steps_offset={steps_offset} moves the leading timesteps out of 0..{T - 1}")
            return (i * (T // n)).flip(0) + steps_offset
        if spacing == "trailing":
            # T + i * delta with numpy's arange rounding of delta, so exact .5 ties round as in diffusers;
            # np.arange itself yields n + 1 values (ending at -1) for 62 values of n <= 1000 (e.g. 61)
            delta = (T + (-T / n)) - T
            return torch.round(T + i * delta) - 1
        return torch.linspace(T - 1, 0, n, dtype=torch.float64) if n > 1 else torch.tensor([T - 1.0], dtype=torch.float64)

    def sigmas(self, n: int, spacing: str = "leading", steps_offset: int = 0) -> torch.Tensor:
        """The n-step sigma grid (n + 1 values, last 0) for a timestep spacing."""
        return append_zero(self.t_to_sigma(self.timesteps(n, spacing, steps_offset)))


class ContinuousVP:
    """A VP schedule in continuous time t in [0, 1]: alpha_bar(t), alpha(t), sigma_vp(t) and the sigma
    (= sigma_vp / alpha) the samplers use, with closed-form inverses.

    kinds: "linear" (beta(t) = T * (beta_start + t (beta_end - beta_start)), the continuous DDPM schedule
    of Song et al. 2021), "scaled_linear" (sqrt(beta) linear, Stable Diffusion), "cosine" (Nichol &
    Dhariwal), "sigmoid" (Chen 2023: alpha_bar from a sigmoid over [start, end] with temperature tau).
    """

    def __init__(self, kind: str = "linear", *, beta_start: float | None = None, beta_end: float | None = None,
                 num_train_timesteps: int = 1000, s: float = 0.008, start: float = -3.0, end: float = 3.0,
                 tau: float = 1.0):
        defaults = {"linear": (1e-4, 0.02), "scaled_linear": (0.00085, 0.012), "cosine": None, "sigmoid": None}
        if kind not in defaults:
            raise ValueError(f"unknown continuous schedule {kind!r}; use one of {sorted(defaults)}")
        self.kind = kind
        b0, b1 = defaults[kind] or (None, None)
        self.beta_start = beta_start if beta_start is not None else b0
        self.beta_end = beta_end if beta_end is not None else b1
        self.T, self.s, self.start, self.end, self.tau = num_train_timesteps, s, start, end, tau

    def _neg_log_alpha_bar(self, t):  # linear kinds: -log alpha_bar(t) = integral of beta
        if self.kind == "linear":
            b0, b1 = self.T * self.beta_start, self.T * self.beta_end
            return b0 * t + 0.5 * (b1 - b0) * t**2
        a, b = self.beta_start**0.5, self.beta_end**0.5 - self.beta_start**0.5
        return self.T * ((a + b * t) ** 3 - a**3) / (3 * b)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.kind in ("linear", "scaled_linear"):
            return torch.exp(-self._neg_log_alpha_bar(t))
        if self.kind == "cosine":
            f = lambda u: torch.cos((u + self.s) / (1 + self.s) * math.pi / 2) ** 2
            return f(t) / f(torch.zeros_like(t))
        v0, v1 = math.tanh(self.start / self.tau / 2) / 2 + 0.5, math.tanh(self.end / self.tau / 2) / 2 + 0.5
        v = torch.sigmoid((t * (self.end - self.start) + self.start) / self.tau)
        return ((v1 - v) / (v1 - v0)).clamp(0, 1)

    def alpha(self, t):
        return self.alpha_bar(t).sqrt()

    def sigma_vp(self, t):
        return (1 - self.alpha_bar(t)).sqrt()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t)
        return ((1 - ab) / ab).sqrt()

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Closed-form inverse of `t_to_sigma`, clamped to [0, 1]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        nlab = torch.log1p(sigma**2)   # -log alpha_bar
        if self.kind == "linear":
            b0, b1 = self.T * self.beta_start, self.T * self.beta_end
            t = (-b0 + (b0**2 + 2 * (b1 - b0) * nlab).sqrt()) / (b1 - b0)
        elif self.kind == "scaled_linear":
            a, b = self.beta_start**0.5, self.beta_end**0.5 - self.beta_start**0.5
            t = ((a**3 + 3 * b * nlab / self.T) ** (1 / 3) - a) / b
        elif self.kind == "cosine":
            f0 = math.cos(self.s / (1 + self.s) * math.pi / 2) ** 2
            t = torch.acos((torch.exp(-nlab) * f0).sqrt()) * 2 / math.pi * (1 + self.s) - self.s
        else:
            v0, v1 = math.tanh(self.start / self.tau / 2) / 2 + 0.5, math.tanh(self.end / self.tau / 2) / 2 + 0.5
            v = v1 - torch.exp(-nlab) * (v1 - v0)
            t = (torch.logit(v) * self.tau - self.start) / (self.end - self.start)
        return t.clamp(0, 1)

    def sigmas(self, n: int, t_min: float = 1e-3, t_max: float = 1.0) -> torch.Tensor:
        """n steps uniform in t from t_max down to t_min, then 0 (t_max = 1 gives sigma = inf where
        alpha_bar(1) = 0, e.g. the sigmoid schedule)."""
        _check_n(n)
        t = torch.linspace(t_max, t_min, n, dtype=torch.float64) if n > 1 else torch.tensor([t_max], dtype=torch.float64)
        return append_zero(self.t_to_sigma(t))


# ---- sigma grids in sigma space ----

def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def _check_n(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"number of steps must be a positive integer, got {n!r}")


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022, eq. 5): n sigmas uniform in sigma^(1/rho) from sigma_max to sigma_min,
    then 0 (n + 1 values, float64). n = 1 gives [sigma_max, 0]."""
    _check_n(n)
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """n sigmas uniform in log sigma from sigma_max to sigma_min, then 0."""
    _check_n(n)
    if not 0 < sigma_min < sigma_max < math.inf:
        raise ValueError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    return append_zero(torch.exp(math.log(sigma_max) + ramp * (math.log(sigma_min) - math.log(sigma_max))))


def flow_t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """Flow-matching time (x_t = (1-t) x0 + t eps) to sigma = t / (1 - t); t = 1 gives inf."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return torch.where(t >= 1, torch.full_like(t, math.inf), t / (1 - t))


def sigma_to_flow_t(sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of `flow_t_to_sigma`; written as 1 / (1 + 1/sigma) so sigma = 0 and inf are exact."""
    return 1 / (1 + 1 / torch.as_tensor(sigma))


def flow_sigmas(n: int, shift: float = 1.0, t_min: float = 1e-3) -> torch.Tensor:
    """Flow-matching grid: t uniform from 1 down to t_min, time-shifted t' = shift t / (1 + (shift-1) t)
    (SD3), as sigmas (first is inf: the start is pure noise), then 0."""
    _check_n(n)
    t = torch.linspace(1, t_min, n, dtype=torch.float64) if n > 1 else torch.ones(1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return append_zero(flow_t_to_sigma(t))


def start_latent(noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The sampler's start from unit noise: noise * sigmas[0], or the noise itself when sigmas[0] is inf."""
    s0 = float(sigmas[0])
    return noise if math.isinf(s0) else noise * s0
