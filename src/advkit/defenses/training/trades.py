"""TRADES: trade-off-inspired adversarial defense via surrogate-loss minimization.

Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan (2019), "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML. The loss is CE(f(x), y) + beta * KL(f(x) || f(x')), where x'
maximises the KL term within the L∞ ball (``steps`` sign-gradient steps of ``step_size`` from
x + 0.001 * N(0, I), projected onto the ball and the bounds). The inner maximisation runs in eval
mode with the model's mode restored after; the outer loss is computed in the caller's mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advkit.defenses.training.adversarial import _AdversarialTraining
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION
from advkit.threats import LpBall


def _kl(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of KL(p_clean || softmax(logits_adv))."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="sum")


@register("trades", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class TRADES(_AdversarialTraining):
    """TRADES (Zhang 2019): cross-entropy plus beta times the KL to the adversarial prediction."""

    eps: float = param(0.3, float, lo=0, doc="radius of the L∞ ball")
    beta: float = param(6.0, float, lo=0, doc="weight of the KL term")
    steps: int = param(40, int, lo=1)
    step_size: float | None = param(None, float, lo=0, lo_open=True,
                                    doc="None: 2.5 * eps / steps")
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="input bounds (lo, hi)")

    def __post_init__(self):
        check_params(self)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _attack(self, model, x, y, generator):
        lo, hi = self.bounds
        ball = LpBall(norm=math.inf, eps=self.eps)
        with torch.no_grad():
            p_clean = F.softmax(model(x), dim=1)
        dev = generator.device if generator is not None else x.device
        z = torch.randn(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
        xa = ball.project((x + 0.001 * z).clamp(lo, hi), x)
        for _ in range(self.steps):
            xg = xa.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(_kl(model(xg), p_clean), xg)
            xa = ball.project(xa + self.alpha * g.sign(), x).clamp(lo, hi)
        return xa

    def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """CE(f(x), y) + beta * KL(f(x) || f(x')) averaged over the batch."""
        x_adv = self.perturb(model, xb, yb, generator)
        logits = model(xb)
        natural = F.cross_entropy(logits, yb)
        robust = _kl(model(x_adv), F.softmax(logits, dim=1)) / xb.shape[0]
        return natural + self.beta * robust
