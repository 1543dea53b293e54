"""DeepFool (minimum-norm), multiclass, for the L2, L∞ and L1 norms.

Moosavi-Dezfooli, Fawzi & Frossard (2016), "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR. At each iteration the classifier is linearised around the current point:
for each candidate class k (the ``candidates`` classes with the highest clean logits, true class
excluded) ``f_k = Z_k - Z_y`` and ``w_k = grad f_k``; the closest linearised boundary is ``l =
argmin_k |f_k| / ||w_k||_q`` (q the dual norm of p) and the step is the minimal one that reaches
it: ``r = |f_l| / ||w_l||_q^q * |w_l|^(q-1) * sign(w_l)`` (Algorithm 2 and section 3.1 of the
paper); for p = 2 this is ``|f_l| / ||w_l||_2^2 * w_l``, for p = inf ``|f_l| / ||w_l||_1 *
sign(w_l)``, for p = 1 a step on the single coordinate of largest ``|w_l|``. Steps accumulate in
``r_tot`` and the iterate is ``x + (1 + overshoot) * r_tot``, clipped to the input bounds. As in
the authors' reference implementation, each step is lengthened by 1e-4 (here times the input
range) so that an iterate cannot settle exactly on a boundary. Only samples still classified as
their true class keep iterating.

Box constraint (not in the paper, which works in an unbounded space): the linearisation is that of
the clipped iterate, i.e. gradient coordinates that would push a coordinate already at a bound
further out are set to zero before the closest boundary and the step are computed. Without this,
clipping absorbs part of every step on images with saturated pixels (MNIST) and the iterates only
approach the boundary geometrically, without crossing it.

Targeted goal (an extension, not in the paper): the single candidate is the target t, linearised
against the currently predicted class: ``f = Z_t - Z_pred``.

Cost: per iteration one forward and one backward per candidate class (candidates - 1 backward
passes untargeted, 1 targeted) over the samples still running; ``passes`` counts backward passes,
``extra['forwards']`` the forwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, grad_of
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION
from advkit.threats import parse_norm


def _dual_norm(w: torch.Tensor, p: float) -> torch.Tensor:
    """||w||_q along the last axis, q the dual of p (2 -> 2, inf -> 1, 1 -> inf)."""
    q = {2.0: 2.0, math.inf: 1.0, 1.0: math.inf}[p]
    return torch.linalg.vector_norm(w, ord=q, dim=-1).clamp_min(1e-12)


def _unit_step(w: torch.Tensor, p: float) -> torch.Tensor:
    """The direction of unit Lp norm that increases ``w . r`` the most (per row)."""
    if p == 2:
        return w / _dual_norm(w, p)[:, None]
    if p == math.inf:
        return w.sign()
    j = w.abs().argmax(1, keepdim=True)
    return torch.zeros_like(w).scatter_(1, j, 1.0) * w.sign()


@register("deepfool", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class DeepFool(EvasionAttack):
    """DeepFool (Moosavi-Dezfooli 2016): iterative linearisation to the closest class boundary."""

    minimum_norm: ClassVar[bool] = True

    norm: float | str = param(2.0, "norm")
    overshoot: float = param(0.02, float, lo=0, hi=1)
    max_iter: int = param(50, int, lo=1)
    candidates: int = param(10, int, lo=2, doc="classes considered per step (the top ones)")

    def __post_init__(self):
        check_params(self)
        object.__setattr__(self, "norm", parse_norm(self.norm))

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        n, shape = x.shape[0], x.shape[1:]
        with torch.no_grad():
            logits0 = target.logits(x, check=False)
        clean_pred = logits0.argmax(1)
        labels = goal.labels_for(y)
        if goal.targeted:
            cand = labels[:, None]
        else:
            k = min(self.candidates, logits0.shape[1]) - 1
            others = logits0.scatter(1, y[:, None], -math.inf)
            cand = others.topk(k, dim=1).indices
        r_tot = torch.zeros_like(x).flatten(1)
        x_adv = x.clone()
        iters = torch.zeros(n, dtype=torch.int64, device=x.device)
        idx = torch.nonzero(~goal.success(clean_pred, y)).squeeze(1)
        passes, forwards = 0, 1
        for _ in range(self.max_iter):
            if idx.numel() == 0:
                break
            xi = x_adv[idx].detach().requires_grad_(True)
            with torch.enable_grad():
                lg = target.logits(xi, check=False)
                forwards += 1
                pred = lg.argmax(1).detach()
                still = pred != labels[idx] if goal.targeted else pred == y[idx]
                if not still.any():  # every remaining sample crossed: no gradients needed
                    break
                ref = pred if goal.targeted else y[idx]
                f = lg.gather(1, cand[idx]) - lg.gather(1, ref[:, None])
                grads = []
                for j in range(f.shape[1]):
                    last = j == f.shape[1] - 1
                    gj = grad_of(target, f[:, j].sum(), xi, retain_graph=not last)
                    grads.append(gj.flatten(1))
                    passes += 1
            w = torch.stack(grads, 1)
            # linearise the clipped iterate: a coordinate at a bound cannot move further out
            xf = xi.detach().flatten(1)[:, None]
            w = w.masked_fill(((xf <= lo) & (w < 0)) | ((xf >= hi) & (w > 0)), 0.0)
            dist = f.detach().abs() / _dual_norm(w, self.norm)  # to each linearised boundary
            best = dist.argmin(1)
            rows = torch.arange(best.shape[0], device=x.device)
            size = dist[rows, best] + 1e-4 * (hi - lo)
            r = size[:, None] * _unit_step(w[rows, best], self.norm)
            r = torch.where(still[:, None], r, torch.zeros_like(r))
            r_tot[idx] = r_tot[idx] + r
            step = (1 + self.overshoot) * r_tot[idx].reshape(-1, *shape)
            x_adv[idx] = (x[idx] + step).clamp(lo, hi)
            iters[idx] = iters[idx] + still.long()
            idx = idx[still]
        extra = {"iterations": iters, "forwards": forwards}
        return Perturbed(x_adv, clean_pred=clean_pred, passes=passes, extra=extra)
