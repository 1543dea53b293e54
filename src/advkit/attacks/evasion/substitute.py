"""Substitute training with Jacobian-based dataset augmentation.

Papernot, McDaniel, Goodfellow, Jha, Celik & Swami (2017), "Practical Black-Box Attacks against
Machine Learning", AsiaCCS. The attacker holds a small seed set S_0 and only the victim oracle
Õ's labels. For ρ = 0 .. rounds: label S_ρ with Õ, train the substitute F on (S_ρ, Õ(S_ρ)), then
augment S_{ρ+1} = S_ρ ∪ {x + λ·sign(∂F_{Õ(x)}(x)/∂x) : x ∈ S_ρ} (clipped to the input bounds):
each point moves along the sign of the Jacobian row of the class the victim gave it, towards the
victim's decision boundary as the substitute sees it. The set doubles each round, so the victim
answers |S_0|·2^rounds labels in all; a point is never asked twice (labels are kept between
rounds). The substitute here is an MLP (advkit's zoo ``mlp``) trained with Adam, warm-started
from the previous round (the paper retrains; warm starting gives the same fixed point for fewer
epochs). The paper's periodic sign flip of λ (τ) and reservoir sampling are not implemented.

Query accounting: every victim query goes through ``victim.labels`` and so through its counter
and budget; ``Substitute.queries`` is the victim counter's increase, exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from advkit.errors import InputContractError
from advkit.models.train import train
from advkit.models.zoo import build
from advkit.params import check_params, param
from advkit.targets.base import Target
from advkit.targets.torch import TorchTarget


@dataclass
class Substitute:
    """A trained substitute: the torch ``model``, the same as a white-box ``target`` (with the
    victim's contract), the victim ``queries`` spent, the final labelled set and per-round
    training-set agreement (share of S_ρ on which F answers Õ's label after round ρ)."""

    model: torch.nn.Module
    target: TorchTarget
    queries: int
    x: torch.Tensor
    y: torch.Tensor
    agreement_by_round: list[float] = field(default_factory=list)

    def agreement(self, victim: Target, x) -> float:
        """Share of ``x`` on which the substitute and the victim give the same label (costs the
        victim ``len(x)`` queries, scored outside its budget)."""
        x = victim.check_inputs(x)
        with torch.no_grad(), victim.scoring():
            v = victim.labels(x, check=False)
            s = self.target.labels(x, check=False)
        return float((v == s).float().mean())


@dataclass(frozen=True, kw_only=True)
class SubstituteTraining:
    """Papernot et al. (2017) substitute training with Jacobian-based dataset augmentation."""

    rounds: int = param(4, int, lo=0, hi=12, doc="augmentation rounds ρ (the set doubles each)")
    lam: float = param(0.1, float, lo=0, lo_open=True, doc="augmentation step λ")
    hidden: tuple = param((64, 64), "ints", lo=1, doc="hidden widths of the substitute MLP")
    epochs: int = param(30, int, lo=1, doc="training epochs per round")
    lr: float = param(1e-2, float, lo=0, lo_open=True, doc="Adam learning rate")
    batch_size: int = param(64, int, lo=1)

    def __post_init__(self):
        check_params(self)

    def fit(self, victim: Target, seed_x, *,
            generator: torch.Generator | None = None) -> Substitute:
        """Train a substitute of ``victim`` from the seed inputs ``seed_x`` (no labels needed:
        the victim labels them). ``generator`` draws the initial weights and the batches."""
        from advkit.attacks.base import check_generator

        if not isinstance(victim, Target):
            raise InputContractError(
                f"the victim must be an advkit Target, got {type(victim).__name__}; wrap the "
                "model in TorchTarget or SklearnTarget")
        check_generator(generator)
        x = victim.check_inputs(seed_x).detach().float()
        if x.shape[0] < 2:
            raise InputContractError(
                f"substitute training needs at least 2 seed inputs, got {x.shape[0]}; pass a "
                "few points per class (the paper used 150 for MNIST)")
        c = victim.contract
        lo, hi = c.bounds
        model = build("mlp", input_shape=c.shape, n_classes=c.n_classes,
                      generator=generator, hidden=list(self.hidden))
        sub = TorchTarget(contract=c, model=model)
        q0 = victim.queries
        with torch.no_grad():
            y = victim.labels(x, check=False)
        agreement = []
        for r in range(self.rounds + 1):
            train(model, x, y, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                  generator=generator, progress=False)
            model.eval()
            with torch.no_grad():
                agreement.append(float((sub.labels(x, check=False) == y).float().mean()))
            if r == self.rounds:
                break
            x_new = self._augment(model, x, y, lo, hi)
            with torch.no_grad():
                y_new = victim.labels(x_new, check=False)
            x, y = torch.cat([x, x_new]), torch.cat([y, y_new])
        return Substitute(model=model, target=sub, queries=victim.queries - q0, x=x, y=y,
                          agreement_by_round=agreement)

    def _augment(self, model, x, y, lo, hi) -> torch.Tensor:
        """x + λ·sign(∂F_y(x)/∂x): the Jacobian row of each point's oracle label."""
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(xg)
            (grad,) = torch.autograd.grad(out.gather(1, y[:, None]).sum(), xg)
        return (x + self.lam * grad.sign()).clamp(lo, hi).detach()
