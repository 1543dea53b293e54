"""Adversarial patch: a square sticker that fools the model wherever it is pasted.

Brown, Mané, Roy, Abadi & Gilmer (2017), "Adversarial Patch", arXiv:1712.09665. The patch is
trained by gradient ascent on the expected loss over random transformations (Expectation over
Transformation, Athalye et al. 2018): at each step every image gets the patch at a uniformly
random location, optionally rescaled by a random factor in ``scale_range``. Untargeted: the
cross-entropy of the true label is maximised; ``Targeted(t)``: the cross-entropy of t is minimised
(the paper's objective). Steps are signed-gradient steps of ``step_size`` times the bounds' range.

A patch is not an Lp perturbation: the attack has no ``eps`` and its threat is None. The reported
``distance`` is the L2 norm of the change (``norm = 2``); ``extra["l0_share"]`` gives the share of
input values changed per sample, ``extra["patch"]`` the patch pixels (C, s, s) and
``extra["location"]`` the (row, col) of each pasted patch. ``size`` is the patch side as a fraction
of the shorter image side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advkit.attacks.base import EvasionAttack, Perturbed, ce_loss, grad_of
from advkit.errors import IncompatibleTargetError
from advkit.evaluation.metrics import Proportion, attack_success_rate, targeted_success_rate
from advkit.goals import Untargeted
from advkit.params import check_params, param
from advkit.registry import register
from advkit.targets.base import Target
from advkit.threat_tags import WHITE_BOX_EVASION


def _images(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 3:
        raise IncompatibleTargetError(
            f"the patch attack needs image inputs (C, H, W) or (H, W); got per-sample shape "
            f"{tuple(x.shape[1:])}; use an Lp attack such as pgd or square for vectors")
    return x.reshape(x.shape[0], -1, x.shape[-2], x.shape[-1])


def _randint(high: int, n: int, generator, device) -> torch.Tensor:
    dev = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=dev).to(device)


def paste(x: torch.Tensor, patch: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """Images (N, C, H, W) with ``patch`` (C, s, s) pasted with its corner at (rows, cols);
    differentiable with respect to the patch."""
    n, c, h, w = x.shape
    s = patch.shape[-1]
    rh = torch.arange(h, device=x.device)[None] - rows[:, None]
    rw = torch.arange(w, device=x.device)[None] - cols[:, None]
    mask = ((rh >= 0) & (rh < s))[:, :, None] & ((rw >= 0) & (rw < s))[:, None, :]
    idx = rh.clamp(0, s - 1)[:, :, None] * s + rw.clamp(0, s - 1)[:, None, :]
    placed = patch.reshape(c, s * s)[:, idx].transpose(0, 1)
    return torch.where(mask[:, None], placed, x)


def paste_random(x: torch.Tensor, patch: torch.Tensor, generator=None):
    """Paste ``patch`` at uniformly random locations (one per image); returns images, rows, cols."""
    xi = _images(x)
    s = patch.shape[-1]
    rows = _randint(xi.shape[2] - s + 1, xi.shape[0], generator, x.device)
    cols = _randint(xi.shape[3] - s + 1, xi.shape[0], generator, x.device)
    return paste(xi, patch, rows, cols).reshape(x.shape), rows, cols


@dataclass(frozen=True)
class AdversarialPatch:
    """A trained patch (C, s, s); ``apply`` pastes it at random locations on any images."""

    patch: torch.Tensor
    bounds: tuple[float, float]

    def apply(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return paste_random(x, self.patch.to(x.device, x.dtype), generator)[0]

    def success_rate(self, target: Target, x, y, *, goal=None, generator=None) -> Proportion:
        """Attack success rate on (held-out) images with the patch at random locations
        (DESIGN §4: untargeted over points correct before; targeted over points not of class t)."""
        x = target.check_inputs(x)
        y = target.check_labels(y, x.shape[0]).to(x.device)
        goal = goal or Untargeted()
        adv = target.labels(self.apply(x, generator), check=False).to(y.device)
        if goal.targeted:
            return targeted_success_rate(adv, y, goal.labels_for(y))
        return attack_success_rate(target.labels(x, check=False).to(y.device), adv, y)


@register("patch", family="evasion", threat=WHITE_BOX_EVASION)
@dataclass(frozen=True, kw_only=True)
class Patch(EvasionAttack):
    """Adversarial patch (Brown 2017): a square patch optimised over random placements (EoT)."""

    images_only = True
    size: float = param(0.25, float, lo=0, hi=1, lo_open=True,
                        doc="patch side / shorter image side")
    steps: int = param(250, int, lo=1)
    step_size: float = param(0.05, float, lo=0, lo_open=True,
                             doc="fraction of the bounds' range per signed-gradient step")
    batch_size: int = param(128, int, lo=1, doc="images per EoT step")
    scale_range: tuple[float, float] = param((1.0, 1.0), "pair", lo=0, lo_open=True,
                                             doc="range of the patch's random rescaling")

    def __post_init__(self):
        check_params(self)

    def fit(self, target: Target, x, y, *, goal=None, generator: torch.Generator | None = None
            ) -> AdversarialPatch:
        """Train a patch on ``(x, y)`` (validated like ``attack``)."""
        target.require(self.requires, f"the {self.name} attack", hint=self.suggestion)
        x = target.check_inputs(x).detach()
        y = target.check_labels(y, x.shape[0]).to(x.device)
        return AdversarialPatch(self._train(target, x, y, goal or Untargeted(), generator),
                                target.contract.bounds)

    def _perturb(self, target, x, y, goal, generator):
        patch = self._train(target, x, y, goal, generator)
        x_adv, rows, cols = paste_random(x, patch, generator)
        l0 = (x_adv != x).flatten(1).float().mean(1)
        extra = {"patch": patch, "location": torch.stack([rows, cols], 1), "l0_share": l0}
        return Perturbed(x_adv, passes=self.steps, extra=extra)

    def _train(self, target, x, y, goal, generator):
        lo, hi = target.contract.bounds
        xi = _images(x)
        n, c, h, w = xi.shape
        side = max(1, round(self.size * min(h, w)))
        dev = generator.device if generator is not None else x.device
        rand = torch.rand((c, side, side), generator=generator, device=dev)
        patch = (lo + (hi - lo) * rand).to(x.device, x.dtype)
        labels = goal.labels_for(y)
        sign = -1.0 if goal.targeted else 1.0
        for _ in range(self.steps):
            idx = torch.randperm(n, generator=generator, device=dev)[: self.batch_size].to(x.device)
            s = side
            if self.scale_range[1] > self.scale_range[0]:  # one random scale per step (host sync)
                a, b = self.scale_range
                u = float(torch.rand((), generator=generator, device=dev))
                s = min(max(1, round(side * (a + u * (b - a)))), h, w)
            p = patch.detach().requires_grad_(True)
            with torch.enable_grad():
                ps = p if s == side else F.interpolate(p[None], size=(s, s), mode="bilinear",
                                                       align_corners=False)[0]
                xa, _, _ = paste_random(xi[idx], ps, generator)
                loss = sign * ce_loss(target.logits(xa.reshape((-1,) + x.shape[1:]), check=False),
                                      labels[idx]).mean()
                g = grad_of(target, loss, p)
            patch = (patch + self.step_size * (hi - lo) * g.sign()).clamp(lo, hi)
        return patch
