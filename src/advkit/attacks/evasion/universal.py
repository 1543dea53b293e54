"""Universal adversarial perturbations: one perturbation v for a whole data set.

Moosavi-Dezfooli, Fawzi, Fawzi & Frossard (2017), "Universal adversarial perturbations", CVPR,
Algorithm 1. Start from v = 0 and pass over the data in a random order; for each point x_i that
x_i + v does not fool yet, find a minimal extra perturbation Δv_i that sends x_i + v across the
nearest decision boundary (a few DeepFool linearisation steps, Moosavi-Dezfooli, Fawzi & Frossard
2016, written here for L2 and L∞ and aware of the input bounds), then project v + Δv_i onto the
Lp ball of radius ``eps``. Stop when the fooling rate on the data reaches 1 - ``delta`` or after
``max_passes`` passes; the v with the highest fooling rate seen at the end of a pass is returned.
``passes`` in the result counts samples differentiated divided by the batch size.

Fooling rate (the paper's definition, reported everywhere here): the share of points whose
predicted label changes, ``k(clip(x + v)) != k(x)``, measured against the clean prediction, not the
true label. With a ``Targeted(t)`` goal the steps aim at class t and the rate is the share of points
predicted as t.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit.attacks.base import EvasionAttack, Perturbed, grad_of
from advkit.errors import InvalidParameterError
from advkit.evaluation.metrics import Proportion, proportion, proportion_of
from advkit.goals import Untargeted
from advkit.params import check_params, param
from advkit.registry import register
from advkit.targets.base import Target
from advkit.threat_tags import WHITE_BOX_EVASION
from advkit.threats import LpBall


@dataclass(frozen=True)
class UniversalPerturbation:
    """A fitted universal perturbation ``v`` (shape of one input) and its fooling rate on the
    fitting data. ``apply`` adds it to any batch and clips to the bounds."""

    v: torch.Tensor
    fooling_rate: float
    n: int
    bounds: tuple[float, float]
    norm: float
    eps: float
    data_passes: int
    target_class: int | None = None

    @property
    def fooling(self) -> Proportion:
        """The fooling rate on the fitting data with its n and Wilson interval."""
        return proportion_of(round(self.fooling_rate * self.n), self.n)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.v.to(x.device, x.dtype)).clamp(*self.bounds)

    def fooling_rate_on(self, target: Target, x) -> Proportion:
        """Fooling rate of ``v`` on (held-out) inputs ``x``, with its Wilson interval."""
        x = target.check_inputs(x)
        clean = target.labels(x, check=False)
        adv = target.labels(self.apply(x), check=False)
        return proportion(_fooled(adv, clean, self.target_class))


def _fooled(pred, clean, target_class):
    return pred == target_class if target_class is not None else pred != clean


@register("universal", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class Universal(EvasionAttack):
    """Universal adversarial perturbation (Moosavi-Dezfooli 2017): one v for the whole batch."""

    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm", choices=(math.inf, 2.0))
    delta: float = param(0.2, float, lo=0, hi=1, doc="stop at fooling rate >= 1 - delta")
    max_passes: int = param(10, int, lo=1)
    steps: int = param(10, int, lo=1, doc="DeepFool iterations per visited point")
    overshoot: float = param(0.02, float, lo=0)

    def __post_init__(self):
        check_params(self)

    def fit(self, target: Target, x, y, *, goal=None, generator: torch.Generator | None = None
            ) -> UniversalPerturbation:
        """Fit v on ``(x, y)`` (validated like ``attack``) and return it with its fooling rate."""
        target.require(self.requires, f"the {self.name} attack", hint=self.suggestion)
        x = target.check_inputs(x).detach()
        y = target.check_labels(y, x.shape[0]).to(x.device)
        return self._fit(target, x, y, goal or Untargeted(), generator)[0]

    def _perturb(self, target, x, y, goal, generator):
        uap, clean, grads = self._fit(target, x, y, goal, generator)
        extra = {"perturbation": uap.v, "fooling_rate": uap.fooling_rate, "fooling": uap.fooling,
                 "fooling_rate_definition": "share of points whose predicted label changes",
                 "data_passes": uap.data_passes}
        return Perturbed(uap.apply(x), clean_pred=clean, passes=math.ceil(grads / x.shape[0]),
                         extra=extra)

    def _fit(self, target, x, y, goal, generator):
        ball = LpBall(norm=self.norm, eps=self.eps)
        lo, hi = target.contract.bounds
        t = None
        if goal.targeted:
            labels = goal.labels_for(y)
            if not bool((labels == labels[0]).all()):
                raise InvalidParameterError("goal", "per-sample targets",
                                            "Targeted(t) with one class t for the whole batch")
            t = int(labels[0])
        with torch.no_grad():
            clean = target.logits(x, check=False).argmax(1)
        v = torch.zeros_like(x[:1])
        best_v, best_rate, grads, passes = v, -1.0, 0, 0
        dev = generator.device if generator is not None else x.device
        for passes in range(1, self.max_passes + 1):  # noqa: B007 (reported)
            for i in torch.randperm(x.shape[0], generator=generator, device=dev).tolist():
                xv = (x[i : i + 1] + v).clamp(lo, hi)
                with torch.no_grad():
                    pred = target.logits(xv, check=False).argmax(1)
                if bool(_fooled(pred, clean[i : i + 1], t)):
                    continue
                dv, used = self._deepfool(target, xv, int(clean[i]), t, ball.p, lo, hi)
                grads += used
                v = ball.project_delta(v + dv)
            with torch.no_grad():
                pred = target.logits((x + v).clamp(lo, hi), check=False).argmax(1)
            rate = _fooled(pred, clean, t).float().mean().item()
            if rate > best_rate:
                best_v, best_rate = v, rate
            if rate >= 1 - self.delta:
                break
        uap = UniversalPerturbation(best_v[0].detach(), best_rate, x.shape[0], (lo, hi), ball.p,
                                    self.eps, passes, t)
        return uap, clean, grads

    def _deepfool(self, target, x0, k0, t, p, lo, hi):
        """Minimal (overshot) perturbation sending ``x0`` across the nearest boundary (or to
        class ``t``), by DeepFool linearisation; returns it and the samples differentiated.
        Coordinates at a bound whose step would point out of the box are left out (box-aware)."""
        k = target.contract.n_classes
        r_tot = torch.zeros_like(x0)
        used = 0
        for _ in range(self.steps):
            xa = (x0 + (1 + self.overshoot) * r_tot).clamp(lo, hi)
            xs = xa.expand((k,) + x0.shape[1:]).clone().requires_grad_(True)
            with torch.enable_grad():  # row j differentiates logit j: the whole Jacobian at once
                logits = target.logits(xs, check=False)
                jac = grad_of(target, logits.diagonal().sum(), xs)
            used += k
            f = logits[0].detach()
            pred = int(f.argmax())
            if (pred == t) if t is not None else (pred != k0):
                break
            ref = pred if t is not None else k0
            cand = torch.tensor([t] if t is not None else [j for j in range(k) if j != ref],
                                device=x0.device)
            w = (jac[cand] - jac[ref]).flatten(1)
            flat = xa.flatten(1)  # coordinates at a bound cannot move further out: drop them
            w = w * ~(((flat <= lo) & (w < 0)) | ((flat >= hi) & (w > 0)))
            fd = (f[cand] - f[ref]).abs()
            wn = w.abs().sum(1) if p == math.inf else w.norm(dim=1)
            dist = fd / wn.clamp_min(1e-12)
            j = int(dist.argmin())
            if p == math.inf:
                r = (fd[j] + 1e-4) / wn[j].clamp_min(1e-12) * w[j].sign()
            else:
                r = (fd[j] + 1e-4) / wn[j].clamp_min(1e-12) ** 2 * w[j]
            r_tot = r_tot + r.reshape(x0.shape)
        return (1 + self.overshoot) * r_tot, used
