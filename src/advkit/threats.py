"""Threat models: the set of perturbations an adversary may apply.

``LpBall(norm, eps)`` is the ball ``{delta : ||delta||_p <= eps}`` around each input, for
p in {inf, 2, 1}. One PGD serves every norm through ``project``, ``random_init`` and
``normalize_grad``. All operations are batched over the first dimension and stay on the input's
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.errors import InvalidParameterError, check_range

_NORMS = {"inf": math.inf, "linf": math.inf, "l2": 2.0, "2": 2.0, "l1": 1.0, "1": 1.0}


def parse_norm(norm) -> float:
    """Accept inf/2/1 as numbers or strings ('linf', 'L2', 'inf', ...)."""
    if isinstance(norm, int | float) and not isinstance(norm, bool) and norm in (math.inf, 2, 1):
        return float(norm)
    key = str(norm).lower().replace("∞", "inf")
    if key in _NORMS:
        return _NORMS[key]
    raise InvalidParameterError("norm", norm, "one of inf, 2, 1 (or 'linf', 'l2', 'l1')")


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def lp_norm(delta: torch.Tensor, p: float) -> torch.Tensor:
    """Per-sample Lp norm of a batch (L∞ as max |.|, which on CPU is several times faster than
    ``vector_norm(ord=inf)``)."""
    flat = _flat(delta)
    if p == math.inf and flat.shape[1]:
        return flat.abs().amax(1)
    return torch.linalg.vector_norm(flat, ord=p, dim=1)


def project_l1(delta: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each sample onto the L1 ball of radius eps.

    Duchi, Shalev-Shwartz, Singer & Chandra (2008), "Efficient projections onto the l1-ball for
    learning in high dimensions", sort-based algorithm, batched.
    """
    flat = _flat(delta)
    n, d = flat.shape
    eps_t = torch.as_tensor(eps, dtype=flat.dtype, device=flat.device).expand(n)
    a = flat.abs()
    inside = a.sum(1) <= eps_t
    mu, _ = torch.sort(a, dim=1, descending=True)
    cums = mu.cumsum(1)
    ar = torch.arange(1, d + 1, device=flat.device, dtype=flat.dtype)
    cond = mu - (cums - eps_t[:, None]) / ar > 0
    rho = d - 1 - torch.flip(cond, dims=[1]).to(torch.int64).argmax(1)  # last index where cond
    theta = (cums.gather(1, rho[:, None]).squeeze(1) - eps_t) / (rho + 1).to(flat.dtype)
    proj = torch.sign(flat) * torch.clamp(a - theta[:, None], min=0)
    out = torch.where(inside[:, None], flat, proj)
    return out.reshape(delta.shape)


def max_distance(p: float, bounds: tuple[float, float], shape: tuple[int, ...]) -> float:
    """The largest Lp distance between two inputs within ``bounds`` of per-sample ``shape``:
    the bounds' width for L∞, width * sqrt(d) for L2 and width * d for L1 (d = features)."""
    width = float(bounds[1]) - float(bounds[0])
    d = math.prod(shape)
    return width if p == math.inf else width * d ** (1.0 / p)


def check_eps(eps: float, norm, bounds: tuple[float, float], shape: tuple[int, ...],
              name: str = "eps") -> float:
    """Raise InvalidParameterError when ``eps`` exceeds the largest distance in the bounds (a
    budget that large is a typo, e.g. 8 for 8/255, and no attack can use it)."""
    p = parse_norm(norm)
    check_range(name, eps, lo=0)
    limit = max_distance(p, bounds, shape)
    if eps > limit * (1 + 1e-6):
        width = float(bounds[1]) - float(bounds[0])
        label = {math.inf: "Linf", 2.0: "L2", 1.0: "L1"}[p]
        raise InvalidParameterError(
            name, eps, f"an {label} budget of at most {limit:g}: the input bounds "
            f"{tuple(bounds)} have width {width:g}, so no perturbation is larger (for inputs "
            "scaled to [0, 255] with bounds [0, 1], write 8/255 as 0.0314)")
    return eps


@dataclass(frozen=True, kw_only=True)
class LpBall:
    """The Lp ball of radius ``eps`` around each input (p = inf, 2 or 1)."""

    norm: float | str = math.inf
    eps: float = 0.03
    l1_sparsity: float = 0.99  # share of coordinates left out of an L1 steepest-ascent step

    def __post_init__(self):
        object.__setattr__(self, "norm", parse_norm(self.norm))
        check_range("eps", self.eps, lo=0)
        if not math.isfinite(self.eps):
            raise InvalidParameterError("eps", self.eps, "a finite value >= 0")
        check_range("l1_sparsity", self.l1_sparsity, lo=0, hi=1, hi_open=True)

    @property
    def p(self) -> float:
        return float(self.norm)

    @property
    def label(self) -> str:
        return {math.inf: "Linf", 2.0: "L2", 1.0: "L1"}[self.p]

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-sample ||a - b||_p."""
        return lp_norm(a - b, self.p)

    def project_delta(self, delta: torch.Tensor, eps=None) -> torch.Tensor:
        eps = self.eps if eps is None else eps
        if self.p == math.inf:
            if isinstance(eps, torch.Tensor):
                e = _per_sample(eps, delta)
                return torch.maximum(torch.minimum(delta, e), -e)
            return delta.clamp(-eps, eps)
        if self.p == 2:
            norms = lp_norm(delta, 2.0)
            e = torch.as_tensor(eps, dtype=delta.dtype, device=delta.device)
            factor = torch.clamp(e / norms.clamp_min(1e-12), max=1.0)
            return delta * _per_sample(factor, delta)
        return project_l1(delta, eps)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Closest point to ``x_adv`` in the ball around ``x``."""
        return x + self.project_delta(x_adv - x)

    def random_init(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """A point drawn uniformly from the ball around ``x`` (before clipping to bounds)."""
        if self.eps == 0:
            return x.clone()
        return x + self.random_delta(x, generator)

    def random_delta(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A perturbation drawn uniformly from the ball (sampled on the generator's device)."""
        n = x.shape[0]
        d = x[0].numel()
        dev = generator.device if generator is not None else x.device
        kw = dict(device=dev, dtype=x.dtype, generator=generator)
        if self.p == math.inf:
            delta = (torch.rand(x.shape, **kw) * 2 - 1) * self.eps
        elif self.p == 2:
            g = torch.randn(x.shape, **kw)
            g = g / _per_sample(lp_norm(g, 2.0).clamp_min(1e-12), g)
            r = torch.rand(n, **kw) ** (1.0 / d)
            delta = g * _per_sample(r * self.eps, g)
        else:
            # uniform in the L1 ball: d+1 exponentials with random signs, normalised by their sum
            e = -torch.log(torch.rand((n, d + 1), **kw).clamp_min(1e-12))
            signs = torch.randint(0, 2, (n, d), device=dev, generator=generator) * 2 - 1
            delta = (signs.to(x.dtype) * e[:, :d] / e.sum(1, keepdim=True)).reshape(
                x.shape
            ) * self.eps
        return delta.to(x.device)

    def normalize_grad(self, g: torch.Tensor) -> torch.Tensor:
        """The steepest-ascent direction of unit Lp norm for gradient ``g``.

        L∞: sign(g). L2: g/||g||₂. L1: the sign of the top (1 - l1_sparsity) share of |g|
        (at least one coordinate), scaled to unit L1 norm (Tramèr & Boneh 2019, SLIDE).
        """
        if self.p == math.inf:
            return g.sign()
        if self.p == 2:
            return g / _per_sample(lp_norm(g, 2.0).clamp_min(1e-12), g)
        flat = _flat(g)
        k = max(1, int(round(flat.shape[1] * (1.0 - self.l1_sparsity))))
        thresh = flat.abs().topk(k, dim=1).values[:, -1:]
        mask = (flat.abs() >= thresh) & (flat != 0)
        step = flat.sign() * mask
        step = step / step.abs().sum(1, keepdim=True).clamp_min(1.0)
        return step.reshape(g.shape)

    def with_eps(self, eps: float) -> LpBall:
        return LpBall(norm=self.norm, eps=eps, l1_sparsity=self.l1_sparsity)
