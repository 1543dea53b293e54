"""Carlini & Wagner L∞ attack, bounded variant.

Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks", IEEE S&P. The
paper's L∞ attack (section V-C) is a minimum-norm search that shrinks a threshold tau; this module
implements the common *bounded* variant instead, which fits a fixed threat model: minimise the
paper's f6 margin loss ``max(Z_y - max_{j != y} Z_j, -kappa)`` (targeted: ``max(max_{j != t} Z_j -
Z_t, -kappa)``) over the L∞ ball of radius ``eps`` intersected with the input bounds, with the
paper's tanh change of variables (section V-A) applied to that per-coordinate box,
``x' = a + (b - a) * (tanh(w) + 1) / 2`` with ``a = max(lo, x - eps)``, ``b = min(hi, x + eps)``,
and Adam on ``w``. No distance term or constant c is needed: the box is the constraint.

A sample stops once the goal is met with confidence ``kappa`` (f6 is flat there); the attack
returns, per sample, the first such iterate, else the iterate of lowest f6. One forward+backward per
iteration over the samples still running (finished ones leave the batch at checks every
``max_iter // 10`` iterations and are frozen in between).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, grad_of
from advkit.attacks.evasion.cw import adam_step, bcast, from_tanh, margin, reached, to_tanh
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION


@register("cw-linf", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class CarliniWagnerLinf(EvasionAttack):
    """Carlini & Wagner L∞ (2017), bounded variant: f6 loss, Adam in tanh space of the eps-box."""

    norm: ClassVar[float] = math.inf

    eps: float = param(0.1, float, lo=0, doc="radius of the L∞ ball")
    kappa: float = param(0.0, float, lo=0, doc="confidence")
    learning_rate: float = param(0.1, float, lo=0, lo_open=True)
    max_iter: int = param(100, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        n, dev = x.shape[0], x.device
        a = (x - self.eps).clamp(lo, hi)
        b = (x + self.eps).clamp(lo, hi)
        span = (b - a).clamp_min(1e-12)  # eps = 0 (or a flat box) leaves x in place
        best_x = x.clone()
        best_mg = torch.full((n,), math.inf, device=dev)
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        idx = torch.arange(n, device=dev)
        labels = goal.labels_for(y)
        w = to_tanh(x, a, a + span)
        m, v = torch.zeros_like(w), torch.zeros_like(w)
        aa, ss, lab = a, span, labels
        check = max(1, self.max_iter // 10)
        passes = 0
        for it in range(self.max_iter):
            wg = w.requires_grad_(True)
            with torch.enable_grad():
                xa = from_tanh(wg, aa, aa + ss)
                mg = margin(target.logits(xa, check=False), lab, goal.targeted)
                g = grad_of(target, mg.clamp_min(-self.kappa).sum(), wg)
            passes += 1
            xa, mg = xa.detach(), mg.detach()
            was_done = done[idx]
            better = ~was_done & (reached(mg, self.kappa) | (mg < best_mg[idx]))
            best_mg[idx] = torch.where(better, mg, best_mg[idx])
            best_x[idx] = torch.where(bcast(better, xa), xa, best_x[idx])
            now_done = was_done | reached(mg, self.kappa)
            done[idx] = now_done
            w_new, m, v = adam_step(w.detach(), g, m, v, it + 1, self.learning_rate)
            w = torch.where(bcast(now_done, w_new), w.detach(), w_new)
            if (it + 1) % check == 0:
                keep = torch.nonzero(~now_done).squeeze(1)
                if keep.numel() == 0:
                    break
                if keep.numel() < idx.numel():
                    idx, w, m, v = idx[keep], w[keep], m[keep], v[keep]
                    aa, ss, lab = aa[keep], ss[keep], lab[keep]
        return Perturbed(best_x, passes=passes, extra={"margin": best_mg})
