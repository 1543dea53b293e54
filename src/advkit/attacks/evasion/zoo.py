"""ZOO (zeroth-order optimisation), L2: score-based coordinate-wise attack with ZOO-ADAM.

Chen, Zhang, Sharma, Yi & Hsieh (2017), "ZOO: Zeroth Order Optimization Based Black-box Attacks to
Deep Neural Networks without Training Substitute Models", AISec. The attack minimises the
Carlini-Wagner objective from scores alone:

    L(x') = ||x' - x||_2^2 + c · f(x'),
    f(x') = max(log F(x')_y - max_{i≠y} log F(x')_i, -κ)       (untargeted)
    f(x') = max(max_{i≠t} log F(x')_i - log F(x')_t, -κ)       (targeted, class t)

where F are the target's probabilities (the softmax of its logits when it has them; probabilities
are floored at 1e-30 before the log). Each iteration draws B coordinates without replacement and
estimates their partial derivatives by the symmetric difference quotient
(L(w + h e_i) - L(w - h e_i)) / 2h (two queries a coordinate, all B of all points in one call),
then takes the paper's ZOO-ADAM step on those coordinates only (Algorithm 2: per-coordinate first
and second moments and per-coordinate step counts T_i for the bias correction), and queries the
new iterate once to learn whether it is adversarial. Iterates are clipped to the bounds.

Options of the paper's section III-D/E:

- ``attack_size`` (images only): attack-space dimension reduction: the variable w is a
  ``attack_size`` x ``attack_size`` image per channel, bilinearly upsampled to the input size;
- ``importance_sampling``: coordinates are drawn with probabilities proportional to the absolute
  change of w max-pooled over regions (8 x 8 for images in the paper; our choice: 4 x 4 regions
  of the attack space for images, single coordinates otherwise), refreshed every 10 iterations,
  mixed half-and-half with the uniform distribution so that no coordinate is starved (our choice).

The constant c is searched per point as in Carlini & Wagner over ``binary_search_steps`` stages
that split the point's queries evenly: a stage that found an adversarial point lowers c (bisection
toward the largest failing c), one that did not raises it (x10 until one succeeds); every stage
restarts from the original input. Every queried point that meets the goal (candidates of the
difference quotients included) is offered to the per-point best.

Per point at most ``max_queries`` score queries, the clean pass included. ``extra``: ``queries``
per point, ``success_by_query`` and ``median_norm_by_query``
(:mod:`advkit.attacks.evasion.query_ledger`). Points not fooled are returned unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from advkit.attacks.base import EvasionAttack, Perturbed
from advkit.attacks.evasion.query_ledger import Ledger, uniform
from advkit.attacks.evasion.square import margin_loss
from advkit.errors import BudgetExhausted, InvalidParameterError
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import BLACK_BOX_EVASION

_LOG_FLOOR = 1e-30
_REFRESH = 10  # iterations between refreshes of the importance-sampling probabilities
_REGION = 4  # side of an importance-sampling region on an image's attack space


@register("zoo", family="evasion", threat=BLACK_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class ZOO(EvasionAttack):
    """ZOO (Chen 2017), L2: Carlini-Wagner loss minimised by coordinate-wise ZOO-ADAM on scores."""

    requires = frozenset({"probabilities"})
    suggest = None
    minimum_norm: ClassVar[bool] = True
    norm: ClassVar[float] = 2.0

    max_queries: int = param(2000, int, lo=4, doc="score queries per point, the clean pass "
                             "included (one iteration costs 2B + 1)")
    const: float = param(10.0, float, lo=0, lo_open=True, doc="c: initial weight of the "
                         "classification loss against the squared L2 norm")
    binary_search_steps: int = param(1, int, lo=1, doc="stages of the per-point search for c "
                                     "(each takes an equal share of the queries)")
    confidence: float = param(0.0, float, lo=0, doc="κ: margin of the log-probabilities beyond "
                              "which the loss stops pulling")
    learning_rate: float = param(0.1, float, lo=0, lo_open=True, doc="η: ZOO-ADAM step size "
                                 "(the paper's 0.01 is for runs of thousands of iterations)")
    coords: int = param(128, int, lo=1, doc="B: coordinates estimated per iteration (at most "
                        "the attack space's size)")
    h: float = param(1e-4, float, lo=0, lo_open=True, doc="step of the symmetric difference "
                     "quotient (the paper's 0.0001; piecewise-constant models such as trees "
                     "need one of the order of their split spacing)")
    beta1: float = param(0.9, float, lo=0, hi=1, hi_open=True, doc="ADAM first-moment decay")
    beta2: float = param(0.999, float, lo=0, hi=1, hi_open=True, doc="ADAM second-moment decay")
    attack_size: int | None = param(None, int, lo=1, doc="images: optimise an attack_size x "
                                    "attack_size image per channel, bilinearly upsampled")
    importance_sampling: bool = param(False, bool, doc="draw coordinates by the recent change "
                                      "of the perturbation (paper section III-E)")

    def __post_init__(self):
        check_params(self)

    def _space(self, shape):
        """(m, up): the attack-space size and the linear map from (k, m) to (k, d) inputs."""
        if self.attack_size is None:
            return math.prod(shape), lambda w: w
        if len(shape) != 3:
            raise InvalidParameterError(
                "attack_size", self.attack_size, f"None for inputs of shape {shape} (attack-space "
                "reduction resizes images, shape (C, H, W))", owner="ZOO")
        c, a = shape[0], self.attack_size

        def up(w: torch.Tensor) -> torch.Tensor:
            img = F.interpolate(w.reshape(-1, c, a, a), size=shape[1:], mode="bilinear",
                                align_corners=False)
            return img.reshape(w.shape[0], -1)

        return c * a * a, up

    def _log_probs(self, target, xs, shape):
        s = target.predict_scores(xs.reshape((-1,) + shape), check=False)
        if target.capabilities.logits:
            return torch.log_softmax(s, 1)
        return torch.log(s.clamp_min(_LOG_FLOOR))

    def _perturb(self, target, x, y, goal, generator):
        shape, n = tuple(x.shape[1:]), x.shape[0]
        m, up = self._space(shape)  # refused before any query
        flat = x.reshape(n, -1)
        led = Ledger(flat, 2.0, self.max_queries)
        logp = self._log_probs(target, flat, shape)
        clean_pred = logp.argmax(1).to(y.device)
        led.spend(torch.arange(n, device=x.device))
        led.settle(goal.success(clean_pred, y))
        idx = torch.nonzero(led.attacked).squeeze(1)
        exhausted = None
        try:
            self._search(target, led, idx, y, goal, shape, m, up, generator)
        except BudgetExhausted as exc:  # keep the best found so far, and say so
            exhausted = str(exc)
        return Perturbed(led.best.reshape(x.shape), clean_pred=clean_pred,
                         extra=led.extra(exhausted))

    def _search(self, target, led, idx, y, goal, shape, m, up, generator):
        """The stages of the search for c, each a ZOO-ADAM run from the original input."""
        k = idx.numel()
        c = torch.full((k,), self.const, device=led.x.device, dtype=led.x.dtype)
        c_lo, c_hi = torch.zeros_like(c), torch.full_like(c, math.inf)
        for stage in range(self.binary_search_steps):
            if k == 0:
                return
            left = self.binary_search_steps - stage
            stop = led.used[idx] + led.left(idx) // left  # this stage's share of each point
            won = self._adam(target, led, idx, y, goal, shape, m, up, c, stop, generator)
            c_hi = torch.where(won, torch.minimum(c_hi, c), c_hi)
            c_lo = torch.where(won, c_lo, torch.maximum(c_lo, c))
            c = torch.where(torch.isfinite(c_hi), (c_lo + c_hi) / 2, c * 10)

    def _adam(self, target, led, idx, y, goal, shape, m, up, c, stop, generator):
        """One ZOO-ADAM run for the points ``idx`` (weights ``c``), until each point's query count
        reaches ``stop``; returns which points found an adversarial point."""
        x0 = led.x[idx]
        k, dev, dt = idx.numel(), x0.device, x0.dtype
        lo, hi = target.contract.bounds
        lab = goal.labels_for(y)[idx]
        w = torch.zeros(k, m, device=dev, dtype=dt)
        mom, vel = torch.zeros_like(w), torch.zeros_like(w)
        steps = torch.zeros(k, m, device=dev, dtype=dt)  # T_i, per coordinate
        prob = torch.full_like(w, 1.0 / m)
        prev = w.clone()
        won = torch.zeros(k, dtype=torch.bool, device=dev)
        unit = up(torch.eye(m, device=dev, dtype=dt)) if m * m <= 1 << 24 else None
        it = 0
        while True:
            b = torch.clamp((stop - led.used[idx] - 1) // 2, max=min(self.coords, m))
            rows = torch.nonzero(b >= 1).squeeze(1)
            if rows.numel() == 0:
                return won
            it += 1
            if self.importance_sampling and it % _REFRESH == 1 and it > 1:
                prob = self._importance(w - prev, shape, m)
                prev = w.clone()
            bmax = int(b[rows].max())
            gumbel = -torch.log(-torch.log(uniform((rows.numel(), m), generator, w)
                                           .clamp(1e-20, 1 - 1e-7)))
            pick = (prob[rows].log() + gumbel).topk(bmax, dim=1).indices  # w/o replacement
            use = torch.arange(bmax, device=dev)[None] < b[rows, None]
            r, j = torch.nonzero(use, as_tuple=True)
            owner, coord = rows[r], pick[r, j]
            dirs = unit[coord] if unit is not None else up(F.one_hot(coord, m).to(dt))
            base = x0[owner] + up(w[owner])
            cand = torch.cat([(base + self.h * dirs).clamp(lo, hi),
                              (base - self.h * dirs).clamp(lo, hi)])
            both = torch.cat([owner, owner])
            loss = self._loss(target, led, idx[both], cand, x0[both], lab[both], c[both], goal,
                              shape, y)
            grad = (loss[:owner.numel()] - loss[owner.numel():]) / (2 * self.h)
            # ZOO-ADAM (Algorithm 2) on the drawn coordinates
            steps[owner, coord] += 1
            mom[owner, coord] = self.beta1 * mom[owner, coord] + (1 - self.beta1) * grad
            vel[owner, coord] = self.beta2 * vel[owner, coord] + (1 - self.beta2) * grad ** 2
            t = steps[owner, coord]
            m_hat = mom[owner, coord] / (1 - self.beta1 ** t)
            v_hat = vel[owner, coord] / (1 - self.beta2 ** t)
            w[owner, coord] -= self.learning_rate * m_hat / (v_hat.sqrt() + 1e-8)
            if self.attack_size is None:  # keep x0 + w inside the bounds
                w[rows] = (x0[rows] + w[rows]).clamp(lo, hi) - x0[rows]
            new = (x0[rows] + up(w[rows])).clamp(lo, hi)
            logp = self._log_probs(target, new, shape)
            led.spend(idx[rows])
            ok = goal.success(logp.argmax(1).to(y.device), y[idx[rows]])
            led.offer(idx[rows], new, ok)
            won[rows] |= ok

    def _loss(self, target, led, owners, cand, x0, lab, c, goal, shape, y):
        """L(x') for candidates ``cand`` of the points ``owners``; adversarial ones are offered."""
        logp = self._log_probs(target, cand, shape)
        led.spend(owners)
        led.offer(owners, cand, goal.success(logp.argmax(1).to(y.device), y[owners]))
        f = margin_loss(logp, lab, goal.targeted).clamp_min(-self.confidence)
        return ((cand - x0) ** 2).sum(1) + c * f

    def _importance(self, change, shape, m):
        """Sampling probabilities from the absolute change of w, max-pooled over regions, half
        mixed with the uniform distribution."""
        a = change.abs()
        if self.attack_size is not None:
            img = a.reshape(-1, shape[0], self.attack_size, self.attack_size)
            pooled = F.max_pool2d(img, _REGION, ceil_mode=True)
            a = F.interpolate(pooled, size=img.shape[2:], mode="nearest").reshape(a.shape)
        total = a.sum(1, keepdim=True)
        share = torch.where(total > 0, a / total.clamp_min(1e-30), torch.full_like(a, 1.0 / m))
        return 0.5 * share + 0.5 / m
