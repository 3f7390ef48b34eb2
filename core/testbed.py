"""Analytic testbed: data whose optimal denoiser is known exactly, and a distance to compare samples.

Two kinds of data, both in the k-diffusion convention `x = x0 + sigma * eps`:

- `GaussianMixture`: weights w_k, means mu_k, covariances C_k (isotropic, diagonal or full) in any
  dimension. The noised marginal is again a mixture, p_sigma = sum_k w_k N(mu_k, C_k + sigma^2 I), so
  its log-density, its score and the optimal denoiser E[x0 | x_sigma] are closed forms:
      E[x0 | x] = sum_k r_k(x) (mu_k + C_k (C_k + sigma^2 I)^-1 (x - mu_k)),
  with r_k(x) the posterior responsibility of component k. Full covariances are stored by their
  eigendecomposition C_k = U_k diag(l_k) U_k^T, so (C_k + sigma^2 I)^-1 costs nothing extra per sigma.
- `EmpiricalSet`: a finite point set (the 2D toys: 8 gaussians, checkerboard, two moons, swiss roll).
  Its noised marginal is the mixture of N(p_i, sigma^2 I) with equal weights, so the optimal denoiser
  is the softmax-weighted average of the points (what a network would learn if it memorised the data).

`sliced_wasserstein` is the sliced W2 distance between two sample sets, exact per projection.
Everything accepts x of shape (B, d) or (B, *event) with prod(event) = d.
"""

from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as a float, a 0-d tensor or a (B,) tensor -> (B, 1) in x's dtype and device."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.reshape(-1, 1).expand(x.shape[0], 1)


def _sum_last(t: torch.Tensor) -> torch.Tensor:
    """t.sum(-1), as a chain of adds when the last dim is short: torch's CPU reduction kernels are
    ~50x slower than elementwise adds over a last dim of 2-8 (this dominates GMM sampling time)."""
    if t.shape[-1] > 32:
        return t.sum(-1)
    out = t[..., 0]
    for i in range(1, t.shape[-1]):
        out = out + t[..., i]
    return out


def _softmax_last(t: torch.Tensor) -> torch.Tensor:
    """softmax over a (short) last dim, with the fast reductions above."""
    e = torch.exp(t - t.amax(-1, keepdim=True))
    return e / _sum_last(e)[..., None]


class GaussianMixture:
    """A Gaussian mixture with the exact denoiser, score and log-density of every noised marginal.

    weights: (K,) (normalised here); means: (K, d);
    covs: a float or (K,) for isotropic variances, (K, d) for diagonal variances, (K, d, d) for full.
    """

    def __init__(self, weights, means, covs, dtype=torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.ndim != 2:
            raise ValueError(f"means must be (K, d), got shape {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=dtype).reshape(-1)
        if weights.shape != (k,) or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"weights must be {k} non-negative numbers with a positive sum")
        covs = torch.as_tensor(covs, dtype=dtype)
        if covs.ndim == 0 or covs.shape == (k,):                   # isotropic
            covs = covs.reshape(-1, 1).expand(k, d).clone()
        if covs.shape == (k, d):                                   # diagonal: U = I
            evals, evecs = covs, None
        elif covs.shape == (k, d, d):                              # full: C = U diag(l) U^T
            covs = 0.5 * (covs + covs.transpose(1, 2))
            evals, evecs = torch.linalg.eigh(covs)
        else:
            raise ValueError(f"covs must be a float, (K,), (K, d) or (K, d, d) with K={k}, d={d}; "
                             f"got shape {tuple(covs.shape)}")
        if (evals <= 0).any():
            raise ValueError("every covariance must be positive definite (variances > 0)")
        self.log_weights = torch.log(weights / weights.sum())      # (K,)
        self.means, self.evals, self.evecs = means, evals, evecs   # (K, d), (K, d), (K, d, d) | None
        self.dim, self.n_components = d, k

    # ------------------------------------------------------------------ constructors
    @classmethod
    def ring(cls, n: int = 8, radius: float = 2.0, std: float = 0.2, dim: int = 2):
        """n equal-weight isotropic modes on a circle in the first two coordinates (the '8 gaussians')."""
        angle = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
        means = torch.zeros(n, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * torch.cos(angle), radius * torch.sin(angle)
        return cls(torch.ones(n), means, std**2)

    @classmethod
    def random(cls, dim: int, n: int, generator: torch.Generator | None = None, spread: float = 2.0,
               std_range=(0.2, 0.6), full: bool = True):
        """A random mixture: means ~ N(0, spread^2 I), full (or diagonal) covariances whose standard
        deviations along random axes lie in std_range, Dirichlet-like random weights."""
        g = generator
        means = spread * torch.randn(n, dim, generator=g, dtype=torch.float64)
        lo, hi = std_range
        stds = lo + (hi - lo) * torch.rand(n, dim, generator=g, dtype=torch.float64)
        weights = 0.5 + torch.rand(n, generator=g, dtype=torch.float64)
        if not full:
            return cls(weights, means, stds**2)
        q, _ = torch.linalg.qr(torch.randn(n, dim, dim, generator=g, dtype=torch.float64))
        covs = q @ torch.diag_embed(stds**2) @ q.transpose(1, 2)
        return cls(weights, means, covs)

    # ------------------------------------------------------------------ internals
    def _params(self, x: torch.Tensor):
        to = {"dtype": x.dtype, "device": x.device}
        evecs = None if self.evecs is None else self.evecs.to(**to)
        return self.log_weights.to(**to), self.means.to(**to), self.evals.to(**to), evecs

    def _components(self, x: torch.Tensor, sigma):
        """Per-component pieces at noise level sigma, for x: (B, d).

        Returns log w_k + log N(x; mu_k, C_k + s^2 I): (B, K), the offsets z = U_k^T (x - mu_k) divided
        by (l + s^2): (B, K, d) (i.e. (C_k + s^2 I)^-1 (x - mu_k) in each eigenbasis), the eigenvalues
        l: (K, d) and the eigenvectors (K, d, d) or None."""
        log_w, means, evals, evecs = self._params(x)
        s2 = _sigma_column(sigma, x).pow(2)[:, :, None]             # (B, 1, 1)
        k, d = means.shape
        if evecs is None:
            z = x[:, None, :] - means[None]                         # (B, K, d)
        else:                                                       # all K rotations in one matmul
            rot = evecs.permute(1, 0, 2).reshape(d, k * d)          # [d, (k, e)] = U_k[d, e]
            z = (x @ rot).reshape(-1, k, d) - torch.einsum("kd,kde->ke", means, evecs)[None]
        var = evals[None] + s2                                      # (B, K, d)
        maha = _sum_last(z * z / var)                                # (B, K)
        log_comp = log_w - 0.5 * (maha + _sum_last(torch.log(var)) + self.dim * LOG_2PI)
        return log_comp, z / var, evals, evecs

    def _combine(self, r: torch.Tensor, v: torch.Tensor, evecs) -> torch.Tensor:
        """sum_k r_k U_k v_k: r (B, K), v (B, K, d) in each eigenbasis -> (B, d) in data coordinates."""
        if evecs is None:
            return _sum_last((r[:, :, None] * v).transpose(1, 2))
        k, d = v.shape[1:]
        back = evecs.permute(0, 2, 1).reshape(k * d, d)            # [(k, e), d] = U_k[d, e]
        return (r[:, :, None] * v).reshape(-1, k * d) @ back

    def _responsibilities(self, log_comp: torch.Tensor, x: torch.Tensor, sigma) -> torch.Tensor:
        """softmax of log_comp, with the prior weights at sigma = inf (where every log_comp is -inf)."""
        r = _softmax_last(log_comp)
        at_inf = torch.isinf(_sigma_column(sigma, x))                  # (B, 1)
        return torch.where(at_inf, self.log_weights.to(dtype=x.dtype, device=x.device).exp(), r)

    # ------------------------------------------------------------------ closed forms
    def log_prob(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """Exact log p_sigma(x) in nats, x: (B, *event) -> (B,)."""
        log_comp, _, _, _ = self._components(x.reshape(x.shape[0], -1), sigma)
        return torch.logsumexp(log_comp, dim=1)

    def responsibilities(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """Posterior P(component k | x_sigma): (B, K)."""
        flat = x.reshape(x.shape[0], -1)
        log_comp, _, _, _ = self._components(flat, sigma)
        return self._responsibilities(log_comp, flat, sigma)

    def score(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """Exact grad_x log p_sigma(x) = -sum_k r_k (C_k + s^2 I)^-1 (x - mu_k), same shape as x."""
        flat = x.reshape(x.shape[0], -1)
        log_comp, scaled, _, evecs = self._components(flat, sigma)
        r = self._responsibilities(log_comp, flat, sigma)           # (B, K)
        return -self._combine(r, scaled, evecs).reshape(x.shape)

    def denoise(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        """The optimal denoiser E[x0 | x0 + sigma eps = x]; x: (B, *event), sigma: float, () or (B,).

        Written as sum_k r_k (mu_k + C_k (C_k + s^2 I)^-1 (x - mu_k)) rather than x + s^2 score, so that
        sigma = 0 returns x exactly and the tests can check Tweedie's formula as an independent fact;
        sigma = inf (a pure-noise start) returns the mixture mean, the limit."""
        flat = x.reshape(x.shape[0], -1)
        log_comp, scaled, evals, evecs = self._components(flat, sigma)
        r = self._responsibilities(log_comp, flat, sigma)           # (B, K)
        shrunk = self._combine(r, evals[None] * scaled, evecs)      # sum_k r_k C_k (C_k + s^2)^-1 (x - mu_k)
        means = self.means.to(dtype=x.dtype, device=x.device)
        return (r @ means + shrunk).reshape(x.shape)

    __call__ = denoise

    # ------------------------------------------------------------------ sampling and modes
    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64,
               device="cpu", return_labels: bool = False):
        """n exact samples x0 (n, d) (and their component labels (n,) if asked)."""
        log_w, means, evals, evecs = self._params(torch.empty(0, dtype=dtype))
        labels = torch.multinomial(log_w.exp(), n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=dtype) * evals[labels].sqrt()
        if evecs is not None:
            z = torch.einsum("bkd,bd->bk", evecs[labels], z)        # U z
        x = (means[labels] + z).to(device)
        return (x, labels.to(device)) if return_labels else x

    def assign(self, x: torch.Tensor, sigma=0.0) -> torch.Tensor:
        """The most probable component of each sample: (B,) long (for mode-coverage checks)."""
        return self.responsibilities(x, sigma).argmax(dim=1)

    def mode_histogram(self, x: torch.Tensor, max_mahalanobis: float | None = 3.0) -> torch.Tensor:
        """Fraction of samples assigned to each component: (K,). With `max_mahalanobis`, a sample farther
        than that (in its component's own metric) counts for no mode, so the fractions may sum to < 1
        and samples stranded between modes show up as missing mass."""
        flat = x.reshape(x.shape[0], -1)
        labels = self.assign(flat)
        counts = torch.zeros(self.n_components, dtype=torch.float64, device=x.device)
        keep = torch.ones_like(labels, dtype=torch.bool)
        if max_mahalanobis is not None:
            _, means, evals, evecs = self._params(flat)
            diff = flat - means[labels]
            z = diff if evecs is None else torch.einsum("bd,bde->be", diff, evecs[labels])
            keep = (z * z / evals[labels]).sum(-1).sqrt() <= max_mahalanobis
        counts.index_add_(0, labels[keep], torch.ones(int(keep.sum()), dtype=torch.float64, device=x.device))
        return counts / max(x.shape[0], 1)

    def mean(self) -> torch.Tensor:
        """Mixture mean (d,)."""
        return (self.log_weights.exp()[:, None] * self.means).sum(0)

    def covariance(self) -> torch.Tensor:
        """Mixture covariance (d, d) (law of total covariance)."""
        w = self.log_weights.exp()
        covs = torch.diag_embed(self.evals) if self.evecs is None else \
            self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(1, 2)
        centred = self.means - self.mean()
        return (w[:, None, None] * (covs + centred[:, :, None] * centred[:, None, :])).sum(0)


# ---------------------------------------------------------------------- 2D toy sets

def toy_points(name: str, n: int, generator: torch.Generator | None = None, dtype=torch.float64):
    """n points (n, 2) of a classic 2D toy, scaled to roughly unit standard deviation per axis.

    name: "8gaussians", "checkerboard", "moons" (two moons), "swissroll"."""
    g = generator

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=dtype)

    def gauss(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    if name == "8gaussians":
        k = torch.randint(0, 8, (n,), generator=g)
        angle = k.to(dtype) * (math.pi / 4)
        pts = 1.4 * torch.stack([torch.cos(angle), torch.sin(angle)], 1) + 0.1 * gauss(n, 2)
    elif name == "checkerboard":
        # 4x4 board on [-2, 2)^2, points uniform on the 8 dark squares
        x = 4 * rand(n) - 2
        y = rand(n) + torch.randint(0, 2, (n,), generator=g).to(dtype) * 2 - 2
        y = y + (torch.floor(x) % 2)                                # shift by one square on odd columns
        pts = torch.stack([x, y], 1) / 1.15
    elif name == "moons":
        upper = torch.rand(n, generator=g) < 0.5
        t = math.pi * rand(n)
        a = torch.stack([torch.cos(t), torch.sin(t)], 1)
        b = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
        pts = torch.where(upper[:, None], a, b) + 0.05 * gauss(n, 2)
        pts = (pts - torch.tensor([0.5, 0.25], dtype=dtype)) / 0.85
    elif name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * rand(n))
        pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1) / 7.0 + 0.05 * gauss(n, 2)
    else:
        raise ValueError(f"unknown toy {name!r}; use one of 8gaussians, checkerboard, moons, swissroll")
    return pts


class EmpiricalSet:
    """The exact denoiser of a finite point set (the empirical distribution of `points`: (N, d)).

    D(x, sigma) = sum_i softmax_i(-|x - p_i|^2 / (2 sigma^2)) p_i, computed in chunks of points with a
    running log-sum-exp, so memory stays at (chunk_x, chunk_points) whatever N is. At sigma -> 0 it
    returns the nearest point; sigma is clamped at `sigma_floor` so that sigma = 0 does too."""

    def __init__(self, points: torch.Tensor, chunk: int = 4096, sigma_floor: float = 1e-6):
        if points.ndim != 2 or points.shape[0] == 0:
            raise ValueError(f"points must be a non-empty (N, d) tensor, got shape {tuple(points.shape)}")
        self.points, self.chunk, self.sigma_floor = points, chunk, sigma_floor
        self.dim = points.shape[1]

    def _scan(self, x: torch.Tensor, sigma):
        """Running log-sum-exp over point chunks. x: (B, d) -> log-normaliser (B,), weighted mean (B, d)."""
        pts = self.points.to(dtype=x.dtype, device=x.device)
        s2 = _sigma_column(sigma, x).clamp_min(self.sigma_floor).pow(2)      # (B, 1)
        x2 = (x * x).sum(1, keepdim=True)
        m = torch.full((x.shape[0], 1), -math.inf, dtype=x.dtype, device=x.device)
        total = torch.zeros_like(m)
        acc = torch.zeros_like(x)
        for start in range(0, pts.shape[0], self.chunk):
            p = pts[start:start + self.chunk]                                # (P, d)
            d2 = (x2 - 2 * x @ p.T + (p * p).sum(1)).clamp_min(0)           # (B, P)
            logits = -d2 / (2 * s2)
            m_new = torch.maximum(m, logits.max(1, keepdim=True).values)
            scale, w = torch.exp(m - m_new), torch.exp(logits - m_new)
            total = total * scale + w.sum(1, keepdim=True)
            acc = acc * scale + w @ p
            m = m_new
        return (m + torch.log(total)).squeeze(1), acc / total

    def denoise(self, x: torch.Tensor, sigma, **cond) -> torch.Tensor:
        """x: (B, *event) -> E[x0 | x] under the empirical distribution, same shape."""
        flat = x.reshape(x.shape[0], -1)
        out = torch.empty_like(flat)
        rows = max(1, (1 << 22) // self.chunk)                                # bound B x P per block
        sig = _sigma_column(sigma, flat)
        for start in range(0, flat.shape[0], rows):
            out[start:start + rows] = self._scan(flat[start:start + rows], sig[start:start + rows, 0])[1]
        return out.reshape(x.shape)

    __call__ = denoise

    def log_prob(self, x: torch.Tensor, sigma) -> torch.Tensor:
        """log p_sigma(x) of the noised empirical distribution (mixture of N(p_i, sigma^2 I)): (B,)."""
        flat = x.reshape(x.shape[0], -1)
        lse, _ = self._scan(flat, sigma)
        s2 = _sigma_column(sigma, flat).clamp_min(self.sigma_floor).pow(2).squeeze(1)
        return lse - math.log(self.points.shape[0]) - 0.5 * self.dim * (LOG_2PI + torch.log(s2))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n points drawn with replacement from the set (exact samples of the empirical distribution)."""
        idx = torch.randint(0, self.points.shape[0], (n,), generator=generator)
        return self.points[idx]


def toy_set(name: str, n_points: int = 2000, generator: torch.Generator | None = None) -> EmpiricalSet:
    """A 2D toy as a finite set with its exact empirical denoiser."""
    return EmpiricalSet(toy_points(name, n_points, generator))


# ---------------------------------------------------------------------- distance

def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Sliced W2 between the empirical distributions of a: (N, *event) and b: (M, *event).

    SW2^2 = E_theta[W2^2(theta.a, theta.b)] over directions theta uniform on the sphere, estimated with
    `n_projections` random directions; each 1D W2 is exact (the integral of the squared difference of
    the two quantile functions, over the merged breakpoints when N != M). Computed in float64.
    For b = a + shift, SW2 = |shift| / sqrt(d) (in expectation over directions)."""
    a = a.reshape(a.shape[0], -1).to(torch.float64)
    b = b.reshape(b.shape[0], -1).to(device=a.device, dtype=torch.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    theta = torch.randn(a.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(a.device)
    pa, _ = torch.sort(a @ theta, dim=0)                         # (N, P) quantiles
    pb, _ = torch.sort(b @ theta, dim=0)                         # (M, P)
    n, m = pa.shape[0], pb.shape[0]
    if n == m:
        w2 = (pa - pb).pow(2).mean(0)
    else:
        # both quantile functions are step functions; integrate on the union of their breakpoints
        cuts = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                          torch.arange(1, m + 1, dtype=torch.float64) / m]).unique().to(a.device)
        widths = torch.diff(cuts, prepend=cuts.new_zeros(1))
        mids = cuts - widths / 2
        ia = (mids * n).long().clamp_max(n - 1)
        ib = (mids * m).long().clamp_max(m - 1)
        w2 = (widths[:, None] * (pa[ia] - pb[ib]).pow(2)).sum(0)
    return w2.mean().sqrt()
