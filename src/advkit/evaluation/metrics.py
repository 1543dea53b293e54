"""The numbers advkit reports, exactly as DESIGN §4 defines them.

Every proportion carries its count, its n and a 95 % Wilson score interval (Wilson 1927,
"Probable inference, the law of succession, and statistical inference", JASA 22:209-212).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

Z95 = 1.959963984540054  # standard normal quantile at 0.975


@dataclass(frozen=True)
class Proportion:
    """k successes out of n, with a Wilson interval [lo, hi] at the given confidence."""

    k: int
    n: int
    lo: float
    hi: float
    confidence: float = 0.95

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def as_dict(self) -> dict:
        return {
            "value": self.value,
            "k": self.k,
            "n": self.n,
            "ci_low": self.lo,
            "ci_high": self.hi,
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict | None) -> Proportion | None:
        """The Proportion ``as_dict`` wrote (a stored record's), or None for None."""
        if d is None:
            return None
        return cls(int(d["k"]), int(d["n"]), d["ci_low"], d["ci_high"],
                   d.get("confidence", 0.95))

    def __str__(self) -> str:
        if not self.n:
            return "n/a (n=0)"
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}] (n={self.n})"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (nan, nan when n == 0)."""
    if n == 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion_of(k: int, n: int) -> Proportion:
    lo, hi = wilson_interval(int(k), int(n))
    return Proportion(int(k), int(n), lo, hi)


def proportion(mask: torch.Tensor, within: torch.Tensor | None = None) -> Proportion:
    """Share of true entries of ``mask`` (restricted to ``within`` when given)."""
    mask = mask.bool()
    if within is not None:
        within = within.bool()
        return proportion_of(int((mask & within).sum()), int(within.sum()))
    return proportion_of(int(mask.sum()), int(mask.numel()))


def clean_accuracy(pred: torch.Tensor, y: torch.Tensor) -> Proportion:
    """Correct / all N evaluated points."""
    return proportion(pred == y)


def robust_accuracy(
    clean_pred: torch.Tensor, adv_pred: torch.Tensor, y: torch.Tensor
) -> Proportion:
    """Points still correctly classified after the attack / all N (AutoAttack's convention).

    A point misclassified before the attack counts as not robust.
    """
    return proportion((clean_pred == y) & (adv_pred == y))


def attack_success_rate(
    clean_pred: torch.Tensor, adv_pred: torch.Tensor, y: torch.Tensor
) -> Proportion:
    """Untargeted: misclassified after the attack / correctly classified before it."""
    correct = clean_pred == y
    return proportion(adv_pred != y, within=correct)


def targeted_success_rate(
    adv_pred: torch.Tensor, y: torch.Tensor, target: torch.Tensor
) -> Proportion:
    """Classified as the target / points whose true class is not the target."""
    return proportion(adv_pred == target, within=y != target)


def backdoor_success_rate(
    triggered_pred: torch.Tensor, y: torch.Tensor, target_class: int
) -> Proportion:
    """Triggered test points (true class != target) classified as the target / those points."""
    return proportion(triggered_pred == target_class, within=y != target_class)


def worst_case_robust(robust_masks: list[torch.Tensor]) -> torch.Tensor:
    """Per point: robust only if it survives every attack run on it."""
    if not robust_masks:
        raise ValueError("worst case over no attacks is undefined")
    out = robust_masks[0].bool().clone()
    for m in robust_masks[1:]:
        out &= m.bool()
    return out


def is_nonincreasing(values: list[float], tol: float = 0.0) -> bool:
    return all(b <= a + tol for a, b in zip(values, values[1:], strict=False))
