"""Fast Gradient Sign Method.

Goodfellow, Shlens & Szegedy (2015), "Explaining and Harnessing Adversarial Examples", ICLR.
One step of size eps along the steepest-ascent direction of the loss for the chosen norm (the sign
of the gradient for L∞, the normalised gradient for L2, a sparse sign step for L1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import WHITE_BOX_EVASION


@register("fgsm", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class FGSM(EvasionAttack):
    """Fast Gradient Sign Method (Goodfellow 2015): one gradient step of size eps."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball (and the step)")
    norm: float | str = param(math.inf, "norm")

    def __post_init__(self):
        check_params(self)

    def _perturb(self, target, x, y, goal, generator):
        ball = self.threat
        sign = -1.0 if goal.targeted else 1.0
        grad, logits, _ = input_grad(target, x, goal.labels_for(y), sign=sign)
        x_adv = x + self.eps * ball.normalize_grad(grad)
        return Perturbed(x_adv, clean_pred=logits.argmax(1), passes=1)
