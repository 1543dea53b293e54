"""Adversarial training: PGD adversarial training and fast FGSM training with a random start.

- ``PGDAdversarialTraining``: Madry, Makelov, Schmidt, Tsipras & Vladu (2018), "Towards Deep
  Learning Models Resistant to Adversarial Attacks", ICLR. Train on the result of a PGD attack
  (uniform random start in the Lp ball, ``steps`` steps of size ``step_size``, projection onto the
  ball and the bounds) on every batch: the min-max (saddle point) formulation.
- ``FastFGSMTraining``: Wong, Rice & Kolter (2020), "Fast is better than free: Revisiting
  adversarial training", ICLR. One FGSM step of size ``alpha`` (default 1.25 eps) from a uniform
  random start in the L∞ ball, projected back onto the ball and the bounds.

Each wrapper works in a user's own training loop, per batch: ``perturb(model, xb, yb, generator)``
returns the adversarial batch and ``loss(model, xb, yb, generator)`` the mean cross-entropy on it
(differentiable in the weights). The attack runs with the model in eval mode (no dropout or
batch-norm statistics updates from the attack's passes) and the model's mode is restored after;
only input gradients are computed, so the weights' ``.grad`` are left alone.
``adversarial_batch_hook(kind, eps, ...)`` gives the ``batch_hook`` of
:func:`advkit.models.train.train` for ``advkit train --defense``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from advkit.errors import InvalidParameterError, check_choice, check_range
from advkit.params import check_params, param
from advkit.registry import register
from advkit.threat_tags import MITIGATES_EVASION
from advkit.threats import LpBall

KINDS = ("pgd-at", "fast-fgsm", "trades")


class _AdversarialTraining:
    """Shared parts: bounds, the eval-mode context and the training loss."""

    eps: float
    bounds: tuple[float, float]

    def perturb(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                x_adv = self._attack(model, xb.detach(), yb, generator)
        finally:
            model.train(was_training)
        return x_adv.detach()

    def loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean cross-entropy of ``model`` on the adversarial batch (call ``.backward()`` on it)."""
        return F.cross_entropy(model(self.perturb(model, xb, yb, generator)), yb)

    def _attack(self, model, x, y, generator) -> torch.Tensor:
        raise NotImplementedError


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(xg), y, reduction="sum")
    (g,) = torch.autograd.grad(loss, xg)
    return g


@register("pgd-at", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class PGDAdversarialTraining(_AdversarialTraining):
    """PGD adversarial training (Madry 2018): train on PGD examples from a random start."""

    eps: float = param(0.3, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm")
    steps: int = param(40, int, lo=1)
    step_size: float | None = param(None, float, lo=0, lo_open=True,
                                    doc="None: 2.5 * eps / steps")
    random_start: bool = param(True, bool)
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="input bounds (lo, hi)")

    def __post_init__(self):
        check_params(self)

    @property
    def alpha(self) -> float:
        return self.step_size if self.step_size is not None else 2.5 * self.eps / self.steps

    def _attack(self, model, x, y, generator):
        ball, (lo, hi) = LpBall(norm=self.norm, eps=self.eps), self.bounds
        xa = ball.random_init(x, generator).clamp(lo, hi) if self.random_start else x.clone()
        for _ in range(self.steps):
            g = _input_grad(model, xa, y)
            xa = ball.project(xa + self.alpha * ball.normalize_grad(g), x).clamp(lo, hi)
        return xa


@register("fast-fgsm", family="defense", threat=MITIGATES_EVASION)
@dataclass(frozen=True, kw_only=True)
class FastFGSMTraining(_AdversarialTraining):
    """Fast FGSM training with a random start (Wong, Rice & Kolter 2020), L∞."""

    eps: float = param(0.3, float, lo=0, doc="radius of the L∞ ball")
    alpha: float | None = param(None, float, lo=0, lo_open=True,
                                doc="step size; None: 1.25 * eps, the paper's choice")
    bounds: tuple[float, float] = param((0.0, 1.0), "pair", strict=True,
                                        doc="input bounds (lo, hi)")

    def __post_init__(self):
        check_params(self)

    @property
    def step(self) -> float:
        return self.alpha if self.alpha is not None else 1.25 * self.eps

    def _attack(self, model, x, y, generator):
        lo, hi = self.bounds
        ball = LpBall(norm=math.inf, eps=self.eps)
        delta = ball.random_delta(x, generator)
        xa = (x + delta).clamp(lo, hi)
        g = _input_grad(model, xa, y)
        return ball.project(xa + self.step * g.sign(), x).clamp(lo, hi)


def adversarial_batch_hook(kind: str, eps: float, *, generator: torch.Generator | None = None,
                           warmup_batches: int = 0, **params
                           ) -> Callable[[torch.Tensor, torch.Tensor, nn.Module],
                                         tuple[torch.Tensor, torch.Tensor]]:
    """A ``batch_hook`` for :func:`advkit.models.train.train` that replaces each batch by its
    adversarial version: ``kind`` is ``"pgd-at"`` or ``"fast-fgsm"``; ``params`` go to the wrapper
    (``steps``, ``step_size``, ``alpha``, ``norm``, ``bounds``).

    ``warmup_batches`` > 0 ramps eps linearly from eps / warmup_batches to eps over the first
    batches (a common remedy when training at a large eps from scratch stalls). TRADES changes the
    loss, not the batch, so it cannot be a batch hook: use ``TRADES.loss`` in a training loop.
    """
    check_choice("kind", kind, KINDS)
    check_range("warmup_batches", warmup_batches, lo=0, kind=int)
    if kind == "trades":
        raise InvalidParameterError(
            "kind", kind, "'pgd-at' or 'fast-fgsm' for a batch hook (TRADES changes the loss: "
            "call advkit.defenses.training.TRADES(...).loss(model, xb, yb) in your training loop)")
    cls = PGDAdversarialTraining if kind == "pgd-at" else FastFGSMTraining
    full = cls(eps=eps, **params)
    state = {"batch": 0}

    def hook(xb: torch.Tensor, yb: torch.Tensor, model: nn.Module):
        state["batch"] += 1
        wrapper = full
        if warmup_batches and state["batch"] < warmup_batches:
            wrapper = cls(eps=eps * state["batch"] / warmup_batches, **params)
        return wrapper.perturb(model, xb, yb, generator), yb

    hook.defense = full  # what the hook trains against, for records
    return hook
