"""A spec becomes a plan: one scenario per attack × budget (eps), plus the ensemble's, in order.

Attacks without an ``eps`` parameter (minimum-norm attacks such as DeepFool and C&W L2, the
adversarial patch) run once per norm: their per-point norms give the whole curve.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from advkit import registry
from advkit.audit.spec import AuditSpec
from advkit.errors import AuditSpecError, InvalidParameterError
from advkit.threats import LpBall, check_eps


@dataclass(frozen=True)
class Scenario:
    id: str
    attack: str  # a registry name, or "ensemble"
    norm: str  # Linf | L2 | L1
    eps: float | None  # None: an attack without a budget (minimum-norm, patch)
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    kind: str = "attack"  # attack | ensemble

    def attack_params(self) -> dict[str, Any]:
        out = dict(self.params)
        if self.eps is not None:
            out["eps"] = self.eps
        if self.kind == "attack" and _has_field(self.attack, "norm"):
            out["norm"] = self.norm.lower()
        return out


def _has_field(name: str, field_name: str) -> bool:
    return any(f.name == field_name for f in dataclasses.fields(registry.get(name).cls))


def make_plan(spec: AuditSpec) -> list[Scenario]:
    plan, seen = [], set()

    def add(sc: Scenario) -> None:
        if sc.id not in seen:
            seen.add(sc.id)
            plan.append(sc)

    for a in spec.attacks:
        norm = LpBall(norm=a.norm, eps=0).label  # validates and canonicalises: Linf / L2 / L1
        if not _has_field(a.name, "eps"):
            add(Scenario(f"{a.name}/{norm}", a.name, norm, None, dict(a.params)))
            continue
        for eps in a.eps:
            add(Scenario(f"{a.name}/{norm}/eps={eps:g}", a.name, norm, float(eps), dict(a.params)))
    if spec.ensemble is not None:
        e = spec.ensemble
        norm = LpBall(norm=e.norm, eps=0).label
        for eps in e.eps:
            add(Scenario(f"ensemble/{norm}/eps={eps:g}", "ensemble", norm, float(eps),
                         {"attacks": list(e.attacks), "version": e.version}, kind="ensemble"))
    return plan


def check_budgets(plan: list[Scenario], info) -> None:
    """Refuse a budget larger than any distance within the data's bounds (``info``: a
    DatasetInfo), e.g. eps: 8 meant as 8/255; run once the data is loaded, before any training."""
    for sc in plan:
        if sc.eps is None:
            continue
        try:
            check_eps(sc.eps, sc.norm.lower(), info.bounds, info.shape)
        except InvalidParameterError as exc:
            raise AuditSpecError(f"scenario {sc.id} on the data {info.name!r}: {exc}") from None
