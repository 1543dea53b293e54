"""Boundary Attack, L2: decision-based minimum-norm random walk along the decision boundary.

Brendel, Rauber & Bethge (2018), "Decision-based adversarial attacks: reliable attacks against
black-box machine learning models", ICLR. From an adversarial start (uniform noise, or failing that
the nearest input of the batch the target already answers wrongly for this point; then a binary
search on the segment to the original input x*, as for HopSkipJump), each step proposes, for the
current adversarial point x̃ at distance r = ‖x̃ - x*‖_2:

1. an orthogonal step: Gaussian noise η scaled to ‖η‖_2 = δ·r, added to x̃ and projected back onto
   the sphere of radius r around x* (the paper's step on the sphere), clipped to the bounds;
2. a step toward the original: that point moved a share ε of the way to x*.

The proposal (2) is kept when it is adversarial. Step sizes adapt as in the paper's section 3.3:
δ grows when more than half of the recent orthogonal steps stay adversarial and shrinks otherwise;
ε grows when more than a fifth (``target_rate``) of the recent full steps are kept and shrinks
otherwise (factor 1.5 every ``adapt_every`` steps of a point; our constants, the paper gives the
targets only). To spend fewer queries than checking both points every step, the full step is asked
only when the orthogonal one is adversarial (when it is not, the full step counts as refused).

Per point at most ``max_queries`` label queries, the clean pass included. ``extra``: ``queries``
per point, ``success_by_query``, ``median_norm_by_query``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack
from advkit.attacks.evasion.query_ledger import (
    bisection_steps,
    decision_attack,
    on_the_boundary,
    randn,
)
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION

_FACTOR = 1.5


@register("boundary", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class BoundaryAttack(EvasionAttack):
    """Boundary Attack (Brendel 2018), L2: decision-based random walk toward the original."""

    requires = frozenset({"labels"})
    suggest = None
    minimum_norm: ClassVar[bool] = True
    norm: ClassVar[float] = 2.0

    max_queries: int = param(1000, int, lo=2, doc="label queries per point, the clean pass "
                             "included")
    spherical_step: float = param(0.01, float, lo=0, lo_open=True, doc="δ: initial orthogonal "
                                  "step, relative to the current distance")
    source_step: float = param(0.01, float, lo=0, hi=1, lo_open=True, hi_open=True,
                               doc="ε: initial share of the distance moved toward the original")
    adapt_every: int = param(10, int, lo=1, doc="steps between step-size adaptations")
    target_rate: float = param(0.2, float, lo=0, hi=1, lo_open=True, hi_open=True,
                               doc="share of full steps kept that ε is steered to")
    init_tries: int = param(50, int, lo=0, doc="uniform-noise draws a point to find a start")

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        bounds = target.contract.bounds
        return decision_attack(target, x, y, goal, p=2.0, max_queries=self.max_queries,
                               run=lambda o, led, cp: self._run(o, led, cp, bounds, generator))

    def _run(self, oracle, led, clean_pred, bounds, generator):
        steps = bisection_steps(led.x.shape[1] ** -1.5)
        got = on_the_boundary(oracle, clean_pred, bounds, self.init_tries, generator, steps, 2.0)
        if got is None:
            return
        idx, cur = got
        k, dev = idx.numel(), cur.device
        delta = torch.full((k,), self.spherical_step, device=dev, dtype=cur.dtype)
        eps = torch.full((k,), self.source_step, device=dev, dtype=cur.dtype)
        sph_ok = torch.zeros(k, device=dev)  # successes in the current adaptation window
        full_ok = torch.zeros(k, device=dev)
        tried = torch.zeros(k, device=dev)
        x0 = led.x[idx]
        while True:
            rows = torch.nonzero(led.left(idx) > 0).squeeze(1)
            if rows.numel() == 0:
                return
            c1, c2 = self._propose(x0[rows], cur[rows], delta[rows], eps[rows], bounds, generator)
            ok1 = oracle.adversarial(c1, idx[rows])
            ask = torch.nonzero(ok1 & (led.left(idx[rows]) > 0)).squeeze(1)
            ok2 = torch.zeros_like(ok1)
            ok2[ask] = oracle.adversarial(c2[ask], idx[rows[ask]])
            cur[rows[ok2]] = c2[ok2]
            led.offer(idx[rows], c2, ok2)
            sph_ok[rows] += ok1.float()
            full_ok[rows] += ok2.float()
            tried[rows] += 1
            due = rows[tried[rows] >= self.adapt_every]
            if due.numel():  # the paper's step-size control, every adapt_every steps of a point
                up = sph_ok[due] / tried[due] > 0.5
                delta[due] = torch.where(up, delta[due] * _FACTOR, delta[due] / _FACTOR)
                up = full_ok[due] / tried[due] > self.target_rate
                eps[due] = torch.where(up, eps[due] * _FACTOR, eps[due] / _FACTOR).clamp(max=0.5)
                sph_ok[due], full_ok[due], tried[due] = 0, 0, 0

    @staticmethod
    def _propose(x0, cur, delta, eps, bounds, generator):
        """The orthogonal step on the sphere around x0 and the step toward x0 from there."""
        diff = cur - x0
        r = diff.norm(dim=1, keepdim=True)
        eta = randn(cur.shape, generator, cur)
        eta = eta * (delta[:, None] * r / eta.norm(dim=1, keepdim=True).clamp_min(1e-12))
        moved = diff + eta
        on_sphere = x0 + moved * (r / moved.norm(dim=1, keepdim=True).clamp_min(1e-12))
        c1 = on_sphere.clamp(*bounds)
        c2 = (c1 + eps[:, None] * (x0 - c1)).clamp(*bounds)
        return c1, c2
