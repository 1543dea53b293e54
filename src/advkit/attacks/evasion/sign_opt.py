"""Sign-OPT, L2: decision-based minimum-norm attack by sign estimates of a direction's gradient.

Cheng, Singh, Chen, Chen, Liu & Hsieh (2020), "Sign-OPT: A Query-Efficient Hard-label Adversarial
Attack", ICLR. The hard-label attack is recast (OPT, Cheng et al. 2019) as the minimisation over
directions θ of

    g(θ) = min { λ > 0 : the target's label at x + λ θ/||θ|| meets the goal },

the distance to the decision boundary along θ, a continuous function of θ even for a
piecewise-constant classifier. Sign-OPT estimates its gradient from single queries: the sign of
g(θ + εu) - g(θ) is answered by one label query, "is x + g(θ)·(θ + εu)/||θ + εu|| adversarial?"
(yes: g does not grow, sign -1; no: sign +1), and

    ∇̂g(θ) = (1/Q) Σ_q sign(g(θ + εu_q) - g(θ)) u_q,   u_q ~ N(0, I)   (the paper's Algorithm 1),

then θ ← θ - η ∇̂g(θ). The new g is found by the binary search on the segment to x (one query a
halving, down to a relative precision ``tolerance``), after one query at the current distance
says whether the step lowered g at all. The step size is searched per point (our choice, in the
spirit of the paper's line search): a step that does not lower g is halved and retried (at most
10 times an iteration); a step taken is doubled for the next iteration.

The start θ_0 is the direction to an adversarial point: uniform noise, or failing that the nearest
input of the batch the target already answers wrongly for this point (as for HopSkipJump).
Candidate points are clipped to the bounds, and θ is always re-read as the direction of the clipped
boundary point, so g is the true L2 distance of the point kept.

Per point at most ``max_queries`` label queries, the clean pass included; an iteration's estimate
uses what is left after reserving the step query and the binary search, and a point stops when
that leaves fewer than two directions. ``extra``: ``queries`` per point, ``success_by_query``,
``median_norm_by_query`` (:mod:`advkit.attacks.evasion.query_ledger`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack
from advkit.attacks.evasion.query_ledger import (
    bisection_steps,
    decision_attack,
    line_search,
    on_the_boundary,
    randn,
)
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION

_CHUNK = 1 << 24  # elements of one (points, directions, d) draw
_HALVINGS = 10  # step-size halvings tried in one iteration


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@register("sign-opt", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class SignOPT(EvasionAttack):
    """Sign-OPT (Cheng 2020), L2: hard-label attack minimising the boundary distance g(θ)."""

    requires = frozenset({"labels"})
    suggest = None
    minimum_norm: ClassVar[bool] = True
    norm: ClassVar[float] = 2.0

    max_queries: int = param(1000, int, lo=2, doc="label queries per point, the clean pass "
                             "included")
    directions: int = param(100, int, lo=2, doc="Q: random directions of one sign estimate")
    smoothing: float = param(0.001, float, lo=0, lo_open=True, doc="ε: scale of the random "
                             "change of the unit direction θ in a sign query")
    step: float = param(0.2, float, lo=0, lo_open=True, doc="η: initial step along the sign "
                        "estimate (θ has unit norm)")
    tolerance: float = param(0.001, float, lo=0, hi=1, lo_open=True, hi_open=True,
                             doc="relative precision of the binary search for g(θ)")
    init_tries: int = param(50, int, lo=0, doc="uniform-noise draws a point to find a start")

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        bounds = target.contract.bounds
        return decision_attack(target, x, y, goal, p=2.0, max_queries=self.max_queries,
                               run=lambda o, led, cp: self._run(o, led, cp, bounds, generator))

    def _run(self, oracle, led, clean_pred, bounds, generator):
        steps = bisection_steps(self.tolerance)
        got = on_the_boundary(oracle, clean_pred, bounds, self.init_tries, generator, steps, 2.0)
        if got is None:
            return
        idx, cur = got
        eta = torch.full((idx.numel(),), self.step, device=cur.device, dtype=cur.dtype)
        while idx.numel():
            evals = torch.clamp(led.left(idx) - steps - 1, max=self.directions)
            keep = evals >= 2
            idx, cur, eta, evals = idx[keep], cur[keep], eta[keep], evals[keep]
            if idx.numel() == 0:
                return
            x0 = led.x[idx]
            g = (cur - x0).norm(dim=1)
            theta = _unit(cur - x0)
            rows = max(1, _CHUNK // (int(evals.max()) * cur.shape[1]))
            grad = torch.cat([
                self._sign_estimate(oracle, idx[i:i + rows], theta[i:i + rows], g[i:i + rows],
                                    evals[i:i + rows], bounds, generator)
                for i in range(0, idx.numel(), rows)])
            cur, eta = self._descend(oracle, idx, cur, theta, g, grad, eta, steps, bounds)

    def _sign_estimate(self, oracle, idx, theta, g, evals, bounds, generator):
        """∇̂g(θ) for the points ``idx`` from ``evals[i]`` sign queries each."""
        k, d = theta.shape
        b = int(evals.max())
        u = randn((k, b, d), generator, theta)
        x0 = oracle.ledger.x[idx]
        cand = (x0[:, None] + g[:, None, None] * _unit(theta[:, None] + self.smoothing * u))
        cand = cand.clamp(*bounds)
        use = torch.arange(b, device=theta.device)[None] < evals[:, None]
        r, c = torch.nonzero(use, as_tuple=True)
        sign = torch.zeros(k, b, device=theta.device, dtype=theta.dtype)
        sign[r, c] = 1 - 2 * oracle.adversarial(cand[r, c], idx[r]).to(theta.dtype)
        return (sign[:, :, None] * u).sum(1) / evals.to(theta.dtype)[:, None]

    @staticmethod
    def _descend(oracle, idx, cur, theta, g, grad, eta, steps, bounds):
        """θ - η∇̂: a step is taken when the new direction is adversarial at the current
        distance (then the binary search finds its g); else η is halved and the step retried."""
        led = oracle.ledger
        x0 = led.x[idx]
        new, moved = cur.clone(), torch.zeros(idx.numel(), dtype=torch.bool, device=cur.device)
        eta = eta.clone()
        for _ in range(_HALVINGS):
            rows = torch.nonzero(~moved & (led.left(idx) > steps)).squeeze(1)
            if rows.numel() == 0:
                break
            cand = (x0[rows] + g[rows, None] * _unit(theta[rows] - eta[rows, None] * grad[rows]))
            cand = cand.clamp(*bounds)
            ok = oracle.adversarial(cand, idx[rows])
            new[rows[ok]], moved[rows[ok]] = cand[ok], True
            eta[rows[~ok]] = eta[rows[~ok]] / 2
        if bool(moved.any()):
            found = line_search(oracle, idx[moved], new[moved], steps, 2.0)
            new[moved] = found
            led.offer(idx[moved], found)
        eta = torch.where(moved, eta * 2, eta)
        return new, eta
