"""Transfer attacks: craft white-box on a surrogate, score on the victim.

Papernot, McDaniel & Goodfellow (2016), "Transferability in Machine Learning: from Phenomena to
Black-Box Attacks using Adversarial Samples" (arXiv:1605.07277), and Papernot et al. (2017),
"Practical Black-Box Attacks against Machine Learning", AsiaCCS. Adversarial examples crafted
against one model often fool another trained for the same task. The attacker needs gradients only
of the surrogate (a model it owns, or a substitute trained from the victim's answers:
:mod:`advkit.attacks.evasion.substitute`); the victim is only asked for labels.

``TransferAttack.craft`` runs a registered white-box attack (``pgd`` or ``fgsm``) on the
surrogate; ``score`` asks the victim for the labels of the clean and the adversarial inputs (2·N
victim queries, counted by the victim's own counter and budget, reported exactly in
``TransferResult.victim_queries``). The success rate is the share of the points the victim
classified correctly (and, with ``within``, that satisfy another condition, e.g. the surrogate
classified them correctly too) whose adversarial example the victim misclassifies.
ATLAS: AML.T0043.002 "Craft Adversarial Data: Black-Box Transfer" (``BLACK_BOX_TRANSFER``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from advkit import registry
from advkit.attacks.base import EvasionResult, check_generator
from advkit.errors import InputContractError
from advkit.evaluation.metrics import Proportion, proportion
from advkit.params import check_params, param
from advkit.targets.base import Target
from advkit.threat_tags import tag

BLACK_BOX_TRANSFER = tag("AML.T0043.002", "black box", related=("AML.T0015",))
CRAFTERS = ("pgd", "fgsm")


@dataclass
class TransferResult:
    """The outcome of one transfer: the surrogate's white-box result and the victim's labels."""

    surrogate: EvasionResult
    victim_clean_pred: torch.Tensor
    victim_adv_pred: torch.Tensor
    within: torch.Tensor  # the points the rate is computed on
    victim_queries: int

    @property
    def fooled(self) -> torch.Tensor:
        """Per point: the victim misclassifies its adversarial example."""
        return self.victim_adv_pred != self.surrogate.y

    def success_rate(self) -> Proportion:
        """Fooled / points the victim classified correctly (within ``within``); Wilson CI."""
        return proportion(self.fooled, within=self.within)

    def as_dict(self) -> dict:
        return {"success_rate": self.success_rate().as_dict(),
                "surrogate_success_rate": self.surrogate.success_rate().as_dict(),
                "victim_queries": self.victim_queries, "eps": self.surrogate.params.get("eps"),
                "attack": self.surrogate.attack}


@dataclass(frozen=True, kw_only=True)
class TransferAttack:
    """Craft on a surrogate with a white-box attack, score on the victim (Papernot 2016/2017)."""

    attack: str = param("pgd", str, choices=CRAFTERS, doc="white-box attack run on the surrogate")
    eps: float = param(0.1, float, lo=0, doc="radius of the Lp ball")
    norm: float | str = param(math.inf, "norm")
    steps: int = param(20, int, lo=1, doc="PGD steps (ignored by fgsm)")

    threat_tag = BLACK_BOX_TRANSFER

    def __post_init__(self):
        check_params(self)

    def crafter(self):
        kw = {"eps": self.eps, "norm": self.norm}
        if self.attack == "pgd":
            kw["steps"] = self.steps
        return registry.create(self.attack, **kw)

    def craft(self, surrogate: Target, x, y, *,
              generator: torch.Generator | None = None) -> EvasionResult:
        """White-box adversarial examples of ``(x, y)`` on ``surrogate`` (needs gradients)."""
        _check_target("surrogate", surrogate)
        return self.crafter().attack(surrogate, x, y, generator=check_generator(generator))

    def score(self, victim: Target, crafted: EvasionResult, *, within=None,
              victim_clean_pred: torch.Tensor | None = None) -> TransferResult:
        """Ask ``victim`` for labels of the clean and adversarial inputs of ``crafted``.
        ``victim_clean_pred`` (the victim's labels of ``crafted.x``, if already known) saves N
        queries. ``within``: a boolean mask further restricting the points the rate counts."""
        _check_target("victim", victim)
        x = victim.check_inputs(crafted.x)
        q0 = victim.queries
        with torch.no_grad():
            clean = (victim.labels(x, check=False) if victim_clean_pred is None
                     else victim_clean_pred.to(crafted.y.device))
            adv = victim.labels(victim.check_inputs(crafted.x_adv), check=False)
        mask = clean.to(crafted.y.device) == crafted.y
        if within is not None:
            within = torch.as_tensor(within, dtype=torch.bool, device=mask.device)
            if within.shape != mask.shape:
                raise InputContractError(
                    f"within has shape {tuple(within.shape)} but there are {mask.shape[0]} "
                    "points; pass one boolean per point")
            mask = mask & within
        return TransferResult(surrogate=crafted, victim_clean_pred=clean.to(mask.device),
                              victim_adv_pred=adv.to(mask.device), within=mask,
                              victim_queries=victim.queries - q0)

    def run(self, surrogate: Target, victim: Target, x, y, *,
            generator: torch.Generator | None = None) -> TransferResult:
        """Craft on ``surrogate`` and score on ``victim`` (2·N victim queries)."""
        return self.score(victim, self.craft(surrogate, x, y, generator=generator))


def _check_target(role: str, t) -> None:
    if not isinstance(t, Target):
        raise InputContractError(
            f"the {role} must be an advkit Target, got {type(t).__name__}; wrap the model in "
            "TorchTarget or SklearnTarget")
