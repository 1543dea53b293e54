"""Carlini & Wagner L2 attack (minimum-norm), plus helpers shared with the L∞ variant.

Carlini & Wagner (2017), "Towards Evaluating the Robustness of Neural Networks", IEEE S&P.
Section V-A: minimise ``||x' - x||_2^2 + c * f(x')`` over ``w`` with ``x' = lo + (hi - lo) *
(tanh(w) + 1) / 2`` (the change of variables keeps ``x'`` in the box), using Adam, where ``f`` is
the paper's f6 margin loss ``max(Z_y - max_{j != y} Z_j, -kappa)`` (untargeted) or ``max(max_{j !=
t} Z_j - Z_t, -kappa)`` (targeted) on the logits ``Z``. A per-sample binary search over ``c``
(start 1e-3, x10 until a success, then bisection) picks the smallest effective constant; each
search step restarts Adam from ``x``. Within a step a sample stops early when its loss has not
fallen by 0.01 % over a tenth of the iterations (the paper's abort_early). The attack keeps, per
sample, the successful iterate of smallest L2 over every step; a sample never fooled is returned
unchanged (distance 0, success False).

All samples optimise together: one forward+backward per iteration over the samples still running
(stalled samples are dropped from the batch at each abort check).
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

_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8


def bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample vector reshaped to broadcast against a batch like ``like``."""
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


def margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """C&W's f6 before clamping at -kappa: the goal is met (strictly) when it is below 0."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels[:, None], True)
    other = logits.masked_fill(mask, -math.inf).amax(1)
    return other - own if targeted else own - other


def reached(mg: torch.Tensor, kappa: float) -> torch.Tensor:
    """Goal met with at least ``kappa`` confidence (and strictly, so ties do not count)."""
    return (mg < 0) & (mg <= -kappa)


def to_tanh(x: torch.Tensor, lo, hi) -> torch.Tensor:
    """``w`` with ``from_tanh(w, lo, hi) == x`` (up to rounding at the box edges)."""
    z = ((x - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
    return torch.atanh(z)


def from_tanh(w: torch.Tensor, lo, hi) -> torch.Tensor:
    return lo + (hi - lo) * (torch.tanh(w) + 1) / 2


def adam_step(w, g, m, v, t: int, lr: float):
    """One elementwise Adam step (Kingma & Ba 2015) on a batch; returns (w, m, v)."""
    b1, b2 = _BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step = lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + _ADAM_EPS)
    return w - step, m, v


@register("cw-l2", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class CarliniWagnerL2(EvasionAttack):
    """Carlini & Wagner L2 (2017): minimum-norm, tanh box, Adam, binary search over c."""

    minimum_norm: ClassVar[bool] = True
    norm: ClassVar[float] = 2.0

    kappa: float = param(0.0, float, lo=0, doc="confidence")
    learning_rate: float = param(0.01, float, lo=0, lo_open=True)
    binary_search_steps: int = param(9, int, lo=1)
    max_iter: int = param(1000, int, lo=1)
    initial_const: float = param(1e-3, float, lo=0, lo_open=True)
    abort_early: bool = param(True, bool)

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        n, dev = x.shape[0], x.device
        labels = goal.labels_for(y)
        lower = torch.zeros(n, device=dev)
        upper = torch.full((n,), 1e10, device=dev)
        const = torch.full((n,), self.initial_const, device=dev)
        best_l2 = torch.full((n,), math.inf, device=dev, dtype=x.dtype)
        best_x = x.clone()
        w0 = to_tanh(x, lo, hi)
        check = max(1, self.max_iter // 10)
        passes = evals = 0
        for _ in range(self.binary_search_steps):
            found = torch.zeros(n, dtype=torch.bool, device=dev)
            idx = torch.arange(n, device=dev)
            w, x0, lab, c = w0.clone(), x, labels, const
            m, v = torch.zeros_like(w), torch.zeros_like(w)
            prev = torch.full((n,), math.inf, device=dev)
            for it in range(self.max_iter):
                wg = w.requires_grad_(True)
                with torch.enable_grad():
                    xa = from_tanh(wg, lo, hi)
                    logits = target.logits(xa, check=False)
                    mg = margin(logits, lab, goal.targeted)
                    l2sq = (xa - x0).flatten(1).pow(2).sum(1)
                    loss = l2sq + c * mg.clamp_min(-self.kappa)
                    if passes == 0:  # the l2 term alone always has a gradient: check the model
                        grad_of(target, mg.sum(), wg, retain_graph=True)
                    (g,) = torch.autograd.grad(loss.sum(), wg)
                passes, evals = passes + 1, evals + idx.numel()
                xa, loss, l2 = xa.detach(), loss.detach(), l2sq.detach().sqrt()
                ok = reached(mg.detach(), self.kappa)
                better = ok & (l2 < best_l2[idx])
                best_l2[idx] = torch.where(better, l2, best_l2[idx])
                best_x[idx] = torch.where(bcast(better, xa), xa, best_x[idx])
                found[idx] = found[idx] | ok
                w, m, v = adam_step(w.detach(), g, m, v, it + 1, self.learning_rate)
                if self.abort_early and it % check == 0:
                    keep = torch.nonzero(loss <= prev * 0.9999).squeeze(1)
                    prev = loss
                    if keep.numel() == 0:
                        break
                    if keep.numel() < idx.numel():
                        idx, w, m, v, prev = idx[keep], w[keep], m[keep], v[keep], prev[keep]
                        x0, lab, c = x0[keep], lab[keep], c[keep]
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < 1e9, (lower + upper) / 2, const * 10)
        extra = {"found": torch.isfinite(best_l2), "c_success": upper, "sample_grad_evals": evals}
        return Perturbed(best_x, passes=passes, extra=extra)
