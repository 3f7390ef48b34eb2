"""Parameterisations: turn a trained network into the one denoiser the samplers use.

Every wrapper here is `D(x, sigma, **cond) -> x0_hat` with `x = x0 + sigma * eps`, written as
preconditioning (Karras et al. 2022, table 1):

    D(x, sigma) = c_skip(sigma) * x + c_out(sigma) * F(c_in(sigma) * x, c_noise(sigma), **cond)

where F is the network. What differs between an eps-, x0-, v- or flow-velocity network is only the four
coefficients and the training target of F:

    wrapper          net input c_in * x          c_skip          c_out                  F learns
    VP eps           x / sqrt(1+s^2) (= x_vp)    1               -s                     eps
    VP x0            x_vp                        0               1                      x0
    VP v             x_vp                        1 / (1+s^2)     -s / sqrt(1+s^2)       alpha eps - sigma_vp x0
    VE eps           x                           1               -s                     eps
    flow velocity    x / (1+s) (= x_t)           1 / (1+s)       -s / (1+s)             eps - x0
    EDM              x / sqrt(s^2+sd^2)          sd^2/(s^2+sd^2)  s sd / sqrt(s^2+sd^2)  (x0 - c_skip x) / c_out

sigma = inf (pure-noise start, see `schedules`): `x` then holds the unit noise itself, so c_in = 1 and
c_skip, c_out are the limits of c_skip * sigma and c_out (v: 0, -1; flow: 1, -1; EDM: 0, sd; x0: 0, 1).
An eps-predictor has no x0 estimate at zero SNR (D would be inf - inf); start such models at a finite sigma.

The coefficient maths uses tensor-only ops (hypot, reciprocal, ones_like) rather than Python scalars:
a sampler calls the wrapper every step, and on the CPU an op with a Python scalar costs twice as much.

`forward(x, sigma, net_output=True)` returns F itself: the training loss calls the wrapper that way, so
a network wrapped in DDP is still called through its own forward.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .schedules import ContinuousVP, DiscreteSchedule


def _batch_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as a (B,) tensor in x's dtype and device (a float or 0-d tensor is broadcast)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma.reshape(x.shape[0])


def _bcast(c, x: torch.Tensor):
    """(B,) coefficients as (B, 1, ...) against x; a constant (float) stays a float (one op fewer)."""
    return c.reshape(-1, *([1] * (x.ndim - 1))) if torch.is_tensor(c) else c


def _const(c, value) -> bool:
    return not torch.is_tensor(c) and c == value


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x = x0 + sigma * noise, and the noise itself where sigma is inf (the pure-noise rule)."""
    s = _bcast(sigma, x0)
    return torch.where(torch.isinf(s), noise, x0 + torch.where(torch.isinf(s), 0, s) * noise)


class Parameterisation(nn.Module):
    """Base class: subclasses define `scalings`, `c_noise`, `target` and `training_sigma`."""

    prediction = "x0"
    accepts_float_sigma = True   # samplers may pass sigma as a Python float (see forward)

    def __init__(self, net):
        super().__init__()
        self.net = net

    def scalings(self, sigma: torch.Tensor):
        """(c_skip, c_out, c_in), each (B,) or a float constant, for sigma (B,), following the inf rule."""
        raise NotImplementedError

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What F should output for x = add_noise(x0, noise, sigma)."""
        c_skip, c_out, _ = (_bcast(c, x0) for c in self.scalings(sigma))
        return (x0 - c_skip * add_noise(x0, noise, sigma)) / c_out

    def training_sigma(self, u: torch.Tensor) -> torch.Tensor:
        """The training noise-level distribution, as its inverse CDF applied to uniform u in [0, 1)."""
        raise NotImplementedError

    def scalar_scalings(self, sigma: float):
        """(c_skip, c_out, c_in) as Python floats for one finite sigma > 0, the same values `scalings`
        gives; None where a subclass has no closed form (the tensor path is used)."""
        return None  # noqa: RET501  (the documented "no closed form" answer)

    def scalar_c_noise(self, sigma: float) -> float:
        return float(self.c_noise(torch.tensor([sigma], dtype=torch.float64)))

    def _has_scalar_path(self) -> bool:
        """Only where `scalings` and `scalar_scalings` come from the same class: a subclass that overrides
        `scalings` alone (e.g. to force x0 prediction) must not get its parent's scalar formulas."""
        cls = type(self)
        ok = _SCALAR_OK.get(cls)
        if ok is None:
            owner = next(k for k in cls.__mro__ if "scalings" in vars(k))
            ok = _SCALAR_OK[cls] = "scalar_scalings" in vars(owner)
        return ok

    def forward(self, x: torch.Tensor, sigma, *, net_output: bool = False, **cond) -> torch.Tensor:
        """x: (B, ...); sigma: (B,) tensor, 0-d tensor or float. A Python float in (0, inf) (what the
        samplers pass) takes the scalar path: coefficients in float math, four tensor ops per call."""
        if type(sigma) is float and 0.0 < sigma < math.inf and self._has_scalar_path():
            coeffs = self.scalar_scalings(sigma)
            if coeffs is not None:
                return self._forward_scalar(x, sigma, coeffs, net_output, cond)
        sigma = _batch_sigma(sigma, x)
        c_skip, c_out, c_in = (_bcast(c, x) for c in self.scalings(sigma))
        F = self.net(x if _const(c_in, 1) else c_in * x, self.c_noise(sigma), **cond)
        if net_output:
            return F
        # every op counts here (samplers call this each step), hence the constant cases and addcmul
        skip = x if _const(c_skip, 1) else torch.zeros_like(x) if _const(c_skip, 0) else c_skip * x
        if _const(c_out, 1):
            return skip + F.to(x.dtype)
        return torch.addcmul(skip, c_out, F.to(x.dtype))


    def _forward_scalar(self, x, sigma, coeffs, net_output, cond):
        c_skip, c_out, c_in = coeffs
        F = self.net(x if c_in == 1 else x * c_in, x.new_full((x.shape[0],), self.scalar_c_noise(sigma)), **cond)
        if net_output:
            return F
        F = F.to(x.dtype)
        if c_skip == 0:
            return F if c_out == 1 else F * c_out
        return torch.add(x if c_skip == 1 else x * c_skip, F, alpha=c_out)


_SCALAR_OK: dict[type, bool] = {}


class EDMPrecond(Parameterisation):
    """EDM preconditioning for a network trained in sigma space, called as `net(x_in, c_noise, **cond)`
    with c_noise = log(sigma) / 4. Training sigmas are log-normal (P_mean, P_std), and with this wrapper
    the plain MSE on F is exactly EDM's weighted loss lambda(sigma) |D - x0|^2, lambda = 1 / c_out^2."""

    prediction = "edm"

    def __init__(self, net, sigma_data: float = 0.5, P_mean: float = -1.2, P_std: float = 1.2):
        super().__init__(net)
        self.sigma_data, self.P_mean, self.P_std = sigma_data, P_mean, P_std

    def scalings(self, sigma):
        one, sd = torch.ones_like(sigma), torch.full_like(sigma, self.sigma_data)
        norm = torch.hypot(sigma, sd)                              # sqrt(s^2 + sd^2)
        c_skip = (sd / norm).square()                              # sd^2 / (s^2 + sd^2)
        c_out = sd / torch.hypot(one, sd / sigma)                  # s sd / sqrt(s^2 + sd^2), exact at 0 and inf
        c_in = torch.where(torch.isposinf(sigma), one, norm.reciprocal())
        return c_skip, c_out, c_in

    def scalar_scalings(self, sigma):
        sd = self.sigma_data
        norm = math.hypot(sigma, sd)
        return (sd / norm) ** 2, sigma * sd / norm, 1.0 / norm

    def c_noise(self, sigma):
        return sigma.log() / 4

    def scalar_c_noise(self, sigma):
        return math.log(sigma) / 4

    def training_sigma(self, u):
        return torch.exp(self.P_mean + self.P_std * math.sqrt(2) * torch.erfinv(2 * u - 1))


class VPDenoiser(Parameterisation):
    """An eps-, x0- or v-prediction network on a VP schedule, called as `net(x_vp, t, **cond)`.

    `schedule` is a `DiscreteSchedule` (t is the training timestep, fractional between table entries
    unless `quantize` rounds it to the nearest trained one, as diffusers' DPM-Solver does with Karras
    sigmas) or a `ContinuousVP` (t in [0, 1], times `t_scale` if the net expects e.g. 0..999).
    Training draws t uniformly: an integer timestep for a discrete schedule, t in [t_min, 1] otherwise.
    """

    def __init__(self, net, schedule: DiscreteSchedule | ContinuousVP, prediction: str = "eps", *,
                 quantize: bool = False, t_scale: float = 1.0, t_min: float = 1e-3):
        super().__init__(net)
        if prediction not in ("eps", "x0", "v"):
            raise ValueError(f"prediction must be 'eps', 'x0' or 'v', got {prediction!r}")
        self.schedule, self.prediction = schedule, prediction
        self.quantize, self.t_scale, self.t_min = quantize, t_scale, t_min

    def scalings(self, sigma):
        one = torch.ones_like(sigma)
        alpha = torch.hypot(one, sigma).reciprocal()                    # 1 / sqrt(1 + s^2), 0 at inf
        c_in = torch.where(torch.isposinf(sigma), one, alpha)          # x_vp; the noise itself at inf
        if self.prediction == "eps":
            return 1.0, sigma.neg(), c_in
        if self.prediction == "x0":
            return 0.0, 1.0, c_in
        # v: D = alpha x_vp - sigma_vp v; sigma_vp = 1/sqrt(1 + 1/s^2) is exact at 0 and inf
        return alpha.square(), torch.hypot(one, sigma.reciprocal()).reciprocal().neg(), c_in

    def scalar_scalings(self, sigma):
        alpha = 1.0 / math.hypot(1.0, sigma)
        if self.prediction == "eps":
            return 1.0, -sigma, alpha
        if self.prediction == "x0":
            return 0.0, 1.0, alpha
        return alpha * alpha, -1.0 / math.hypot(1.0, 1.0 / sigma), alpha

    def scalar_c_noise(self, sigma):
        if not isinstance(self.schedule, DiscreteSchedule):
            return super().scalar_c_noise(sigma)
        t = self.schedule.scalar_sigma_to_t(sigma)
        return (round(t) if self.quantize else t) * self.t_scale

    def c_noise(self, sigma):
        t = self.schedule.sigma_to_t(sigma)
        if self.quantize:
            t = t.round()
        return (t if self.t_scale == 1 else t * self.t_scale).to(sigma.dtype)

    def target(self, x0, noise, sigma):
        if self.prediction == "eps":
            return noise
        if self.prediction == "x0":
            return x0
        s = _bcast(sigma, x0)
        return torch.rsqrt(1 + s**2) * noise - torch.rsqrt(1 + 1 / s**2) * x0

    def training_sigma(self, u):
        if isinstance(self.schedule, DiscreteSchedule):
            t = (u * self.schedule.num_train_timesteps).floor()
        else:
            t = self.t_min + (1 - self.t_min) * u
        return self.schedule.t_to_sigma(t).to(u.dtype)


class VEDenoiser(Parameterisation):
    """A variance-exploding network (Song et al. 2021) predicting eps (or x0) from x itself, called as
    `net(x, log(sigma / 2), **cond)` (EDM's VE conditioning); training sigma is log-uniform in
    [sigma_min, sigma_max]. VE has no pure-noise start: use a finite sigma_max."""

    def __init__(self, net, prediction: str = "eps", sigma_min: float = 0.02, sigma_max: float = 100.0):
        super().__init__(net)
        if prediction not in ("eps", "x0"):
            raise ValueError(f"prediction must be 'eps' or 'x0', got {prediction!r}")
        self.prediction, self.sigma_min, self.sigma_max = prediction, sigma_min, sigma_max

    def scalings(self, sigma):
        if self.prediction == "eps":
            return 1.0, -sigma, 1.0
        return 0.0, 1.0, 1.0

    def scalar_scalings(self, sigma):
        return (1.0, -sigma, 1.0) if self.prediction == "eps" else (0.0, 1.0, 1.0)

    def c_noise(self, sigma):
        return (sigma / 2).log()

    def scalar_c_noise(self, sigma):
        return math.log(sigma / 2)

    def target(self, x0, noise, sigma):
        return noise if self.prediction == "eps" else x0

    def training_sigma(self, u):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u


class FlowDenoiser(Parameterisation):
    """A rectified-flow / flow-matching velocity network, x_t = (1 - t) x0 + t eps, v = eps - x0, called
    as `net(x_t, t * t_scale, **cond)` (diffusers' FlowMatch models use t_scale = 1000). Training t is
    uniform, or logit-normal (SD3) with `time_sampling="logit_normal"`."""

    prediction = "flow"

    def __init__(self, net, t_scale: float = 1.0, time_sampling: str = "uniform", logit_mean: float = 0.0,
                 logit_std: float = 1.0):
        super().__init__(net)
        if time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit_normal', got {time_sampling!r}")
        self.t_scale, self.time_sampling = t_scale, time_sampling
        self.logit_mean, self.logit_std = logit_mean, logit_std

    def scalings(self, sigma):
        one = torch.ones_like(sigma)
        one_minus_t = torch.where(torch.isposinf(sigma), one, (one + sigma).reciprocal())   # the noise at inf
        t = (one + sigma.reciprocal()).reciprocal()
        return one_minus_t, t.neg(), one_minus_t

    def scalar_scalings(self, sigma):
        one_minus_t = 1.0 / (1.0 + sigma)
        return one_minus_t, -1.0 / (1.0 + 1.0 / sigma), one_minus_t

    def c_noise(self, sigma):
        t = (torch.ones_like(sigma) + sigma.reciprocal()).reciprocal()
        return t if self.t_scale == 1 else t * self.t_scale

    def scalar_c_noise(self, sigma):
        return 1.0 / (1.0 + 1.0 / sigma) * self.t_scale

    def target(self, x0, noise, sigma):
        return noise - x0

    def training_sigma(self, u):
        if self.time_sampling == "logit_normal":
            t = torch.sigmoid(self.logit_mean + self.logit_std * math.sqrt(2) * torch.erfinv(2 * u - 1))
        else:
            t = u
        return t / (1 - t)
