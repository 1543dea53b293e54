"""Basic Iterative Method (iterative FGSM).

Kurakin, Goodfellow & Bengio (2016), "Adversarial examples in the physical world", arXiv:1607.02533
(ICLR 2017 workshop). Starting from the clean input (no random start), repeat ``steps`` times: a
step of size ``step_size`` along the steepest-ascent direction of the loss for the norm (the sign of
the gradient for L∞), then clip back onto the ball and the input bounds.

Defaults follow the paper, for inputs scaled to [0, 1] (eps in input units): one grey level per step
(``step_size = 1/255``) and ``steps = ceil(min(255·eps + 4, 1.25·255·eps))``. The paper covers L∞
only; for L2 and L1 the defaults are 10 steps of ``1.25·eps/steps`` (the ratio of the paper's
small-eps regime). A sample that reaches the goal is frozen there (it stays a success; the paper
returns the last iterate, which may have lost it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape((-1,) + (1,) * (like.dim() - 1))


@register("bim", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class BIM(EvasionAttack):
    """Basic Iterative Method / I-FGSM (Kurakin 2016): FGSM steps from the clean input, clipped."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm")
    steps: int | None = param(None, int, lo=1, doc="None: ceil(min(255·eps + 4, 1.25·255·eps)) "
                              "for L∞ (paper), else 10")
    step_size: float | None = param(None, float, lo=0, lo_open=True,
                                    doc="None: 1/255 for L∞ (one grey level), 1.25·eps/steps "
                                        "otherwise")

    def __post_init__(self):
        check_params(self)

    @property
    def n_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        if self.threat.p == math.inf:
            return max(1, math.ceil(min(255 * self.eps + 4, 1.25 * 255 * self.eps) - 1e-9))
        return 10

    @property
    def alpha(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 1 / 255 if self.threat.p == math.inf else 1.25 * self.eps / self.n_steps

    def _perturb(self, target, x, y, goal, generator):
        ball, (lo, hi) = self.threat, target.contract.bounds
        labels = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0
        xa, done, clean_pred = x.clone(), None, None
        for _ in range(self.n_steps):
            grad, logits, _ = input_grad(target, xa, labels, sign=sign)
            ok = goal.success(logits.argmax(1), y)
            if clean_pred is None:
                clean_pred, done = logits.argmax(1), ok
            done = done | ok
            step = ball.project(xa + self.alpha * ball.normalize_grad(grad), x).clamp(lo, hi)
            xa = torch.where(_bcast(done, xa), xa, step)
        return Perturbed(xa, clean_pred=clean_pred, passes=self.n_steps)
