"""Jacobian-based Saliency Map Attack (JSMA), the L0 attack on pairs of features.

Papernot, McDaniel, Jha, Fredrikson, Celik & Swami (2016), "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P, Algorithms 1 and 3. Each iteration computes the forward
derivative of the logits: ``a = grad Z_t`` and ``b = grad sum_{j != t} Z_j``; over pairs (p, q) of
features still in the search domain it picks the pair maximising ``-alpha * beta`` with ``alpha =
a_p + a_q`` and ``beta = b_p + b_q``, subject to ``alpha > 0`` and ``beta < 0`` (for ``theta > 0``;
the signs flip for ``theta < 0``), moves both features by ``theta`` (a share of the input range,
clipped to the bounds) and removes them from the search domain. The search domain starts as the
features that can move in theta's direction. A sample stops when the goal is reached, when
``floor(gamma * d)`` features would be exceeded (so at most ``gamma * d`` features change), or when
no admissible pair is left.

The attack is inherently targeted. Untargeted goal: each sample's target is its most likely wrong
class (highest clean logit other than the true class), and the sample stops as soon as it is
misclassified as any class.

The distance is L0 (number of changed features); ``passes`` counts backward passes (two per
iteration, sharing one forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, grad_of
from advkit.params import check_params, invalid, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION

_PAIR_BUDGET = 1 << 22  # elements of one (samples x d x d) saliency block


def _best_pairs(a, b, dom, sign: float):
    """Per sample the admissible pair (p, q) of largest -alpha*beta, and whether one exists."""
    m, d = a.shape
    eye = torch.eye(d, dtype=torch.bool, device=a.device)
    ps, qs, oks = [], [], []
    step = max(1, _PAIR_BUDGET // (d * d))
    for s in range(0, m, step):
        aa, bb, dd = a[s : s + step], b[s : s + step], dom[s : s + step]
        alpha = aa[:, :, None] + aa[:, None, :]
        beta = bb[:, :, None] + bb[:, None, :]
        ok = (dd[:, :, None] & dd[:, None, :] & ~eye) & (sign * alpha > 0) & (sign * beta < 0)
        score = torch.where(ok, -alpha * beta, torch.full_like(alpha, -math.inf)).flatten(1)
        best, arg = score.max(1)
        ps.append(arg // d)
        qs.append(arg % d)
        oks.append(torch.isfinite(best))
    return torch.cat(ps), torch.cat(qs), torch.cat(oks)


@register("jsma", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class JSMA(EvasionAttack):
    """Jacobian-based Saliency Map Attack (Papernot 2016): L0, modifies pairs of features."""

    minimum_norm: ClassVar[bool] = True

    theta: float = param(1.0, float, lo=-1, hi=1, doc="change of a selected feature, share of "
                         "the input range (nonzero); its sign is the direction")
    gamma: float = param(0.1, float, lo=0, lo_open=True, hi=1,
                         doc="largest share of features that may change")

    def __post_init__(self):
        check_params(self)
        if self.theta == 0:
            raise invalid(self, "theta", "a nonzero float in [-1, 1]")

    @property
    def norm_p(self) -> float:
        return 0.0  # L0: the template counts changed features

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        shape = x.shape[1:]
        xf = x.flatten(1)
        d = xf.shape[1]
        with torch.no_grad():
            logits0 = target.logits(x, check=False)
        clean_pred = logits0.argmax(1)
        if goal.targeted:
            tgt = goal.labels_for(y)
        else:
            tgt = logits0.scatter(1, y[:, None], -math.inf).argmax(1)
        sign = 1.0 if self.theta > 0 else -1.0
        delta = self.theta * (hi - lo)
        xa = xf.clone()
        dom = xf < hi if sign > 0 else xf > lo
        idx = torch.nonzero(~goal.success(clean_pred, y)).squeeze(1)
        passes, forwards = 0, 1
        for _ in range(int(self.gamma * d) // 2):
            if idx.numel() == 0:
                break
            xi = xa[idx].reshape(-1, *shape).requires_grad_(True)
            with torch.enable_grad():
                lg = target.logits(xi, check=False)
                forwards += 1
                pred = lg.argmax(1).detach()
                still = pred != tgt[idx] if goal.targeted else pred == y[idx]
                if not still.any():  # every remaining sample reached the goal
                    break
                zt = lg.gather(1, tgt[idx, None]).sum()
                ga = grad_of(target, zt, xi, retain_graph=True)
                gs = grad_of(target, lg.sum(), xi)
            passes += 2
            a = ga.flatten(1)
            p, q, has = _best_pairs(a, gs.flatten(1) - a, dom[idx], sign)
            move = still & has
            sel = torch.zeros_like(dom[idx]).scatter_(1, p[:, None], True)
            sel = sel.scatter_(1, q[:, None], True)
            sel &= move[:, None]
            xa[idx] = torch.where(sel, (xa[idx] + delta).clamp(lo, hi), xa[idx])
            dom[idx] = dom[idx] & ~sel
            idx = idx[move]
        return Perturbed(xa.reshape(x.shape), clean_pred=clean_pred, passes=passes,
                         extra={"targets": tgt, "forwards": forwards})
