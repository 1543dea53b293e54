"""Attack templates and their typed results.

``EvasionAttack.attack`` is fixed here: it checks the target's capabilities and the input contract,
calls the leaf's ``_perturb`` (the math only), projects onto the threat model and clips to the
bounds, scores success with the goal and counts queries. A leaf attack is a frozen, keyword-only
dataclass registered with ``@register(name, family="evasion")``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from advkit.errors import BudgetExhausted, InputContractError, InvalidParameterError
from advkit.evaluation.metrics import (
    Proportion,
    attack_success_rate,
    proportion,
    targeted_success_rate,
)
from advkit.goals import Targeted, Untargeted
from advkit.targets.base import Target, no_gradient_path
from advkit.threats import LpBall, check_eps, lp_norm


@dataclass
class Perturbed:
    """What a leaf's ``_perturb`` may return instead of a bare tensor.

    ``clean_pred`` (predictions on the unperturbed inputs) lets the template skip a forward pass
    the leaf already made; ``passes`` counts the leaf's forward+backward passes over the batch.
    """

    x_adv: torch.Tensor
    clean_pred: torch.Tensor | None = None
    passes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EvasionResult:
    """Raw, per-sample outcome of one evasion attack on one batch (never formatted strings)."""

    attack: str
    params: dict[str, Any]
    x: torch.Tensor
    x_adv: torch.Tensor
    y: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    adv_confidence: torch.Tensor
    success: torch.Tensor  # goal reached on each sample
    distance: torch.Tensor  # per-sample Lp norm of x_adv - x in the attack's norm
    norm: float
    targeted: bool
    target_labels: torch.Tensor | None
    queries: int
    passes: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.y.shape[0])

    @property
    def clean_correct(self) -> torch.Tensor:
        return self.clean_pred == self.y

    @property
    def robust(self) -> torch.Tensor:
        """Still correctly classified after the attack (and before it)."""
        return self.clean_correct & (self.adv_pred == self.y)

    def clean_accuracy(self) -> Proportion:
        return proportion(self.clean_correct)

    def robust_accuracy(self) -> Proportion:
        return proportion(self.robust)

    def success_rate(self) -> Proportion:
        if self.targeted:
            return targeted_success_rate(self.adv_pred, self.y, self.target_labels)
        return attack_success_rate(self.clean_pred, self.adv_pred, self.y)


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy."""
    return F.cross_entropy(logits, labels, reduction="none")


def input_grad(
    target: Target, x: torch.Tensor, labels: torch.Tensor, loss_fn=ce_loss, sign: float = 1.0
):
    """Gradient of ``sign * loss_fn(target.logits(x), labels)`` w.r.t. ``x`` (one forward+backward).

    Returns (grad, logits, per-sample loss), the last two detached.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = target.logits(xg, check=False)
        loss = loss_fn(logits, labels)
        if sign != 1.0:
            loss = loss * sign
        grad = grad_of(target, loss.sum(), xg)
    return grad, logits.detach(), loss.detach()


def grad_of(target: Target, output: torch.Tensor, wrt: torch.Tensor, *,
            retain_graph: bool = False) -> torch.Tensor:
    """``torch.autograd.grad(output, wrt)`` for an attack that differentiates the scores of
    ``target`` itself; ModelBehaviorError (not a raw torch error) when the model's scores have no
    gradient path back to ``wrt``."""
    if not output.requires_grad:
        raise no_gradient_path(target.model_name)
    (grad,) = torch.autograd.grad(output, wrt, retain_graph=retain_graph, allow_unused=True)
    if grad is None:
        raise no_gradient_path(target.model_name)
    return grad


def take_rows_(dst: torch.Tensor, src: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``dst[i] = src[i]`` for each sample ``i`` where ``mask[i]``, in place; returns ``dst``.

    Done as ``lerp_`` with a per-sample weight of 0 or 1, which is exact for finite inputs (torch
    evaluates a weight >= 0.5 as ``end - (end - start) * (1 - weight)``; a test pins this down) and
    on CPU several times cheaper than ``torch.where`` with a broadcast mask.
    """
    w = mask.to(dst.dtype).reshape((-1,) + (1,) * (dst.dim() - 1))
    return dst.lerp_(src, w)


def check_generator(generator) -> torch.Generator | None:
    """``generator`` if it is None or a ``torch.Generator``; InvalidParameterError otherwise."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InvalidParameterError(
            "generator", generator,
            "a torch.Generator or None (for a seed s, pass torch.Generator().manual_seed(s))")
    return generator


class EvasionAttack:
    """Template for evasion attacks. Leaves implement ``_perturb`` and declare ``requires``."""

    name: ClassVar[str] = "evasion"
    family: ClassVar[str] = "evasion"
    requires: ClassVar[frozenset[str]] = frozenset({"gradients"})
    # the attack named first when the target lacks a capability (only if the target can run it:
    # ``suggestion`` names registered attacks whose ``requires`` the target meets, or none)
    suggest: ClassVar[str | None] = "square"
    minimum_norm: ClassVar[bool] = False  # minimum-norm attacks report the norm they found

    def suggestion(self, capabilities) -> str:
        """What to try on a target with ``capabilities`` that cannot run this attack: the
        registered attacks it can run (``suggest`` first), or that none is registered yet."""
        from advkit.attacks.support import alternatives

        return alternatives(capabilities, prefer=self.suggest, family=self.family)

    @property
    def threat(self) -> LpBall | None:
        """The ball the result is projected onto (None for unbounded minimum-norm attacks)."""
        eps = getattr(self, "eps", None)
        if eps is None:
            return None
        return LpBall(norm=getattr(self, "norm", "inf"), eps=eps)

    @property
    def norm_p(self) -> float:
        t = self.threat
        if t is not None:
            return t.p
        return LpBall(norm=getattr(self, "norm", 2), eps=0).p

    def params(self) -> dict[str, Any]:
        return (
            {f.name: getattr(self, f.name) for f in fields(self)}
            if hasattr(self, "__dataclass_fields__")
            else {}
        )

    def _perturb(self, target: Target, x, y, goal, generator) -> torch.Tensor | Perturbed:
        raise NotImplementedError

    def attack(
        self, target: Target, x, y, *, goal=None, generator: torch.Generator | None = None
    ) -> EvasionResult:
        target.require(self.requires, f"the {self.name} attack", hint=self.suggestion)
        check_generator(generator)
        x = target.check_inputs(x).detach()
        if x.shape[0] == 0:
            raise InputContractError(
                f"the {self.name} attack got an empty batch (0 inputs); pass at least one input")
        y = target.check_labels(y, x.shape[0]).to(x.device)
        if self.threat is not None:
            check_eps(self.threat.eps, self.threat.p, target.contract.bounds, target.contract.shape)
        goal = goal if goal is not None else Untargeted()
        target_labels = goal.labels_for(y) if isinstance(goal, Targeted) else None
        if target_labels is not None:
            target.check_labels(target_labels)
        q0, t0 = target.queries, time.perf_counter()
        try:
            out = self._perturb(target, x, y, goal, generator)
        except BudgetExhausted as exc:  # nothing kept by the leaf: the inputs themselves
            out = Perturbed(x.clone(), extra={"budget_exhausted": str(exc)})
        if not isinstance(out, Perturbed):
            out = Perturbed(out)
        x_adv = out.x_adv.detach()
        if self.threat is not None:
            x_adv = self.threat.project(x_adv, x)
        x_adv = x_adv.clamp(*target.contract.bounds)
        space = target.feature_space
        if space is not None:  # tabular constraints: immutable, integer, one-hot (final projection)
            x_adv = space.project(x_adv, x, self.threat)
        with torch.no_grad(), target.scoring():  # scoring the result: not the attacker's budget
            clean_pred = (
                out.clean_pred if out.clean_pred is not None else target.labels(x, check=False)
            )
            scores = target.predict_scores(x_adv, check=False)
            probs = torch.softmax(scores, 1) if target.capabilities.logits else scores
            conf, adv_pred = probs.max(1)
        seconds = time.perf_counter() - t0
        return EvasionResult(
            attack=self.name,
            params=self.params(),
            x=x,
            x_adv=x_adv,
            y=y,
            clean_pred=clean_pred.to(y.device),
            adv_pred=adv_pred.to(y.device),
            adv_confidence=conf.to(x.device),
            success=goal.success(adv_pred.to(y.device), y),
            distance=lp_norm(x_adv - x, self.norm_p),
            norm=self.norm_p,
            targeted=isinstance(goal, Targeted),
            target_labels=target_labels,
            queries=target.queries - q0,
            passes=out.passes,
            seconds=seconds,
            extra=out.extra,
        )
