"""HopSkipJump, L2 and L∞: decision-based minimum-norm attack (predicted labels only).

Chen, Jordan & Wainwright (2020), "HopSkipJumpAttack: a query-efficient decision-based attack",
IEEE S&P. From an adversarial start x_0 (uniform noise, or failing that the nearest input of the
batch the target already answers wrongly for this point), each iteration t = 1, 2, ...:

1. binary search on the segment to the original input x* (L2) or on the radius of the L∞ ball
   around it (projection), down to the threshold θ = d^(-3/2) (L2) or d^(-2) (L∞), keeping the
   adversarial end: a point x_t at the boundary;
2. gradient-direction estimate at x_t from B_t = B_0·sqrt(t) (capped at ``max_evals``) random unit
   directions u_b at radius δ_t, each answered by one label query φ_b = ±1:
   ∇ ≈ Σ (φ_b - mean φ) u_b / (B_t - 1) (the paper's baseline; the mean itself when every φ_b
   agrees), with δ_t = sqrt(d)·θ·‖x_{t-1} - x*‖_2 (L2) or d·θ·‖x_{t-1} - x*‖_∞ (L∞), and
   δ_1 = 0.1·(hi - lo) (our choice for the first estimate, where no earlier distance exists);
3. the update direction v = ∇/‖∇‖_2 (L2) or sign(∇) (L∞), and the geometric stepsize search:
   ξ = ‖x_t - x*‖_p / sqrt(t), halved until x_t + ξ·v (clipped to the bounds) is adversarial.

Every point keeps the nearest adversarial point found so far. Per point at most ``max_queries``
label queries (the clean pass included): an iteration's gradient estimate uses what is left after
reserving the binary search and a stepsize query; a point stops when that leaves fewer than two
directions. ``extra``: ``queries`` per point, ``success_by_query`` and ``median_norm_by_query``
(:mod:`advkit.attacks.evasion.query_ledger`). Targeted: the start is the nearest batch input the
target already labels as the target class (or noise labelled so), then the same iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack
from advkit.attacks.evasion.query_ledger import (
    LabelOracle,
    bisection_steps,
    decision_attack,
    line_search,
    on_the_boundary,
    randn,
)
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION
from advkit.threats import lp_norm, parse_norm

_CHUNK = 1 << 24  # elements of one gradient-estimate draw


def estimate_direction(oracle: LabelOracle, idx: torch.Tensor, xb: torch.Tensor,
                       delta: torch.Tensor, evals: torch.Tensor, bounds, generator) -> torch.Tensor:
    """The paper's Monte-Carlo estimate of the boundary's normal at ``xb`` (pointing to the
    adversarial side), from ``evals[i]`` random unit directions for point ``idx[i]`` at radius
    ``delta[i]``; the directions are those actually taken after clipping to the bounds."""
    k, d = xb.shape
    b = int(evals.max())
    u = randn((k, b, d), generator, xb)
    u = u / u.norm(dim=2, keepdim=True).clamp_min(1e-12)
    cand = (xb[:, None] + delta[:, None, None] * u).clamp(*bounds)
    u = (cand - xb[:, None]) / delta[:, None, None]
    use = torch.arange(b, device=xb.device)[None] < evals[:, None]  # (k, b)
    rows, cols = torch.nonzero(use, as_tuple=True)
    phi = torch.zeros(k, b, device=xb.device, dtype=xb.dtype)
    phi[rows, cols] = oracle.adversarial(cand[rows, cols], idx[rows]).to(xb.dtype) * 2 - 1
    cnt = evals.to(xb.dtype)
    mean = phi.sum(1) / cnt
    agree = mean.abs() == 1
    centred = torch.where(use, phi - mean[:, None], torch.zeros_like(phi))
    w = torch.where(agree[:, None], phi / cnt[:, None],
                    centred / (cnt - 1).clamp_min(1)[:, None])
    return (w[:, :, None] * u).sum(1)


@register("hopskipjump", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class HopSkipJump(EvasionAttack):
    """HopSkipJump (Chen 2020), L2 or L∞: decision-based minimum-norm attack from labels only."""

    requires = frozenset({"labels"})
    suggest = None
    minimum_norm: ClassVar[bool] = True

    norm: float | str = param(2.0, "norm", choices=(2.0, math.inf))
    max_queries: int = param(1000, int, lo=2, doc="label queries per point, the clean pass "
                             "included (the paper's runs go to 25,000)")
    init_evals: int = param(100, int, lo=2, doc="B_0: directions of the first gradient estimate")
    max_evals: int = param(10000, int, lo=2, doc="cap on the directions of one estimate")
    init_tries: int = param(50, int, lo=0, doc="uniform-noise draws a point to find a start")

    def __post_init__(self):
        check_params(self)
        object.__setattr__(self, "norm", parse_norm(self.norm))

    def _perturb(self, target, x, y, goal, generator):
        bounds, p = target.contract.bounds, self.norm
        d = math.prod(x.shape[1:])
        theta = d ** -1.5 if p == 2 else d ** -2.0
        steps = bisection_steps(theta)
        return decision_attack(
            target, x, y, goal, p=p, max_queries=self.max_queries,
            run=lambda o, led, cp: self._run(o, led, cp, bounds, theta, steps, generator))

    def _run(self, oracle, led, clean_pred, bounds, theta, steps, generator):
        p = self.norm
        got = on_the_boundary(oracle, clean_pred, bounds, self.init_tries, generator, steps, p)
        if got is None:
            return
        idx, cur = got
        d = cur.shape[1]
        lo, hi = bounds
        t = 0
        while idx.numel():
            t += 1
            dist = lp_norm(cur - led.x[idx], p)
            # the iteration's cost: the estimate, a stepsize query, the binary search
            evals = torch.clamp(led.left(idx) - steps - 1,
                                max=min(int(self.init_evals * math.sqrt(t)), self.max_evals))
            keep = evals >= 2
            idx, cur, dist, evals = idx[keep], cur[keep], dist[keep], evals[keep]
            if idx.numel() == 0:
                break
            if t == 1:
                delta = torch.full_like(dist, 0.1 * (hi - lo))
            else:
                delta = (math.sqrt(d) if p == 2 else d) * theta * dist
            delta = delta.clamp_min(1e-10 * (hi - lo))
            # in chunks of points, so that the (points, directions, d) draw stays ~64 MB
            rows = max(1, _CHUNK // (int(evals.max()) * d))
            grad = torch.cat([
                estimate_direction(oracle, idx[i:i + rows], cur[i:i + rows], delta[i:i + rows],
                                   evals[i:i + rows], bounds, generator)
                for i in range(0, idx.numel(), rows)])
            if p == 2:
                v = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
            else:
                v = grad.sign()
            cur, moved = self._geometric(oracle, idx, cur, v, dist / math.sqrt(t), steps, bounds)
            cur_m = line_search(oracle, idx[moved], cur[moved], steps, p)
            cur[moved] = cur_m
            led.offer(idx[moved], cur_m)
            # a point whose stepsize search ran out of queries is done
            keep = moved | (led.left(idx) > steps + 2)
            idx, cur = idx[keep], cur[keep]

    @staticmethod
    def _geometric(oracle, idx, cur, v, xi, steps, bounds):
        """Halve ξ until cur + ξ·v is adversarial (while a point has queries left beyond its
        binary search); returns the new points and which of them moved."""
        led = oracle.ledger
        new, moved = cur.clone(), torch.zeros(idx.numel(), dtype=torch.bool, device=cur.device)
        xi = xi.clone()
        while True:
            rows = torch.nonzero(~moved & (led.left(idx) > steps) & (xi > 0)).squeeze(1)
            if rows.numel() == 0:
                return new, moved
            cand = (cur[rows] + xi[rows, None] * v[rows]).clamp(*bounds)
            ok = oracle.adversarial(cand, idx[rows])
            new[rows[ok]], moved[rows[ok]] = cand[ok], True
            xi[rows[~ok]] = xi[rows[~ok]] / 2
