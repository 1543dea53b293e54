"""Projected Gradient Descent, one implementation for every Lp norm.

Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR. From a uniform random start in the ball (optional), repeat: step of size
``step_size`` along the steepest-ascent direction of the loss for the norm, project back onto the ball
and the input bounds. Restarts run only on points not yet fooled; per point the attack keeps, over
steps and restarts, the iterate with the highest loss among those that fooled the model; a point no
iterate fooled gets the
final iterate of its last run, as in plain PGD. Each step costs one forward+backward: iterates are
scored by the forward of their own gradient step, and only the final iterate is scored by the
template's closing forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, input_grad
from advkit.errors import check_range
from advkit.registry import register
from advkit.threats import LpBall


def _bcast(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape((-1,) + (1,) * (like.dim() - 1))


@register("pgd", family="evasion")
@dataclass(frozen=True, kw_only=True)
class PGD(EvasionAttack):
    """Projected Gradient Descent (Madry 2018) for L∞, L2 and L1 balls, with restarts."""

    eps: float = 0.1
    norm: float | str = math.inf
    steps: int = 40
    step_size: float | None = None  # default 2.5 * eps / steps (Madry et al.)
    random_start: bool = True
    restarts: int = 1

    def __post_init__(self):
        check_range("eps", self.eps, lo=0)
        check_range("steps", self.steps, lo=1, kind=int)
        check_range("restarts", self.restarts, lo=1, kind=int)
        if self.step_size is not None:
            check_range("step_size", self.step_size, lo=0, lo_open=True)
        LpBall(norm=self.norm, eps=self.eps)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _perturb(self, target, x, y, goal, generator):
        ball = self.threat
        lo, hi = target.contract.bounds
        labels = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0
        best_x = x.clone()
        best_loss = torch.full((x.shape[0],), -math.inf, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        clean_pred, passes = None, 0
        for restart in range(self.restarts):
            idx = torch.nonzero(~done).squeeze(1)
            if idx.numel() == 0:
                break
            x0, lab, y0 = x[idx], labels[idx], y[idx]
            project = self._projector(ball, x0, lo, hi)
            xa = ball.random_init(x0, generator).clamp(lo, hi) if self.random_start else x0.clone()
            b_x, b_loss, b_ok = best_x[idx], best_loss[idx], done[idx]

            def keep(xa, logits, loss, b_x, b_loss, b_ok, y0=y0):
                ok = goal.success(logits.argmax(1), y0)
                better = (ok & ~b_ok) | ((ok == b_ok) & (loss > b_loss))
                return (torch.where(_bcast(better, xa), xa, b_x), torch.where(better, loss, b_loss),
                        b_ok | ok)

            for step in range(self.steps):
                grad, logits, loss = input_grad(target, xa, lab, sign=sign)
                passes += 1
                if clean_pred is None and step == 0 and not self.random_start:
                    clean_pred = logits.argmax(1)
                b_x, b_loss, b_ok = keep(xa, logits, loss, b_x, b_loss, b_ok)
                xa = project(xa + self.alpha * ball.normalize_grad(grad))
            if restart < self.restarts - 1:  # the next restart needs to know who is fooled
                with torch.no_grad():
                    logits = target.logits(xa, check=False)
                loss = torch.nn.functional.cross_entropy(logits, lab, reduction="none") * sign
                b_x, b_loss, b_ok = keep(xa, logits, loss, b_x, b_loss, b_ok)
            else:  # last run: points no iterate fooled get the final iterate, scored by the template
                b_x = torch.where(_bcast(b_ok, xa), b_x, xa)
            best_x[idx], best_loss[idx], done[idx] = b_x, b_loss, b_ok
        return Perturbed(best_x, clean_pred=clean_pred, passes=passes)

    @staticmethod
    def _projector(ball, x0, lo, hi):
        """Projection onto the ball around ``x0`` intersected with the bounds. For L∞ both are
        boxes, so their intersection is one precomputed box and each step is a single clamp."""
        if ball.p == math.inf:
            lower = (x0 - ball.eps).clamp_min(lo)
            upper = (x0 + ball.eps).clamp_max(hi)
            return lambda z: torch.clamp(z, lower, upper)
        return lambda z: ball.project(z, x0).clamp(lo, hi)
