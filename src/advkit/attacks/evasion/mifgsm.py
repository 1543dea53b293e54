"""Momentum Iterative FGSM.

Dong, Liao, Pang, Su, Zhu, Hu & Li (2018), "Boosting Adversarial Attacks with Momentum", CVPR.
Iterative FGSM whose step follows an accumulated gradient: ``g ← mu·g + ∇/‖∇‖₁`` (the input gradient
normalised per sample by its L1 norm), then ``x ← clip(x + step_size·sign(g))`` for L∞ (the
normalised ``g`` for L2, a sparse sign step for L1). Defaults from the paper: ``mu = 1``, 10 steps
of ``eps/steps``. With ``mu = 0`` it is exactly BIM (the L1 normalisation is a positive per-sample
scale, which changes neither the sign nor the L2 direction). A sample reaching the goal is frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION
from advkit.threats import lp_norm


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape((-1,) + (1,) * (like.dim() - 1))


@register("mifgsm", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class MIFGSM(EvasionAttack):
    """Momentum Iterative FGSM (Dong 2018): iterative FGSM along L1-normalised gradient momentum."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm")
    steps: int = param(10, int, lo=1)
    step_size: float | None = param(None, float, lo=0, lo_open=True, doc="None: eps / steps")
    mu: float = param(1.0, float, lo=0, doc="momentum decay factor")

    def __post_init__(self):
        check_params(self)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else self.eps / self.steps

    def _perturb(self, target, x, y, goal, generator):
        ball, (lo, hi) = self.threat, target.contract.bounds
        labels = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0
        xa, g = x.clone(), torch.zeros_like(x)
        done, clean_pred = None, None
        for _ in range(self.steps):
            grad, logits, _ = input_grad(target, xa, labels, sign=sign)
            ok = goal.success(logits.argmax(1), y)
            if clean_pred is None:
                clean_pred, done = logits.argmax(1), ok
            done = done | ok
            g = self.mu * g + grad / _bcast(lp_norm(grad, 1.0).clamp_min(1e-12), grad)
            step = ball.project(xa + self.alpha * ball.normalize_grad(g), x).clamp(lo, hi)
            xa = torch.where(_bcast(done, xa), xa, step)
        return Perturbed(xa, clean_pred=clean_pred, passes=self.steps)
