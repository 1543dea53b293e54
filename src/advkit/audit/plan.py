"""A spec becomes a plan: one scenario per attack × budget (eps), in a stable order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from advkit.audit.spec import AuditSpec
from advkit.threats import LpBall


@dataclass(frozen=True)
class Scenario:
    id: str
    attack: str
    norm: str  # Linf | L2 | L1
    eps: float
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def attack_params(self) -> dict[str, Any]:
        return {**self.params, "eps": self.eps, "norm": self.norm.lower()}


def make_plan(spec: AuditSpec) -> list[Scenario]:
    plan, seen = [], set()
    for a in spec.attacks:
        norm = LpBall(norm=a.norm, eps=0).label  # validates and canonicalises: Linf / L2 / L1
        for eps in a.eps:
            sid = f"{a.name}/{norm}/eps={eps:g}"
            if sid in seen:
                continue
            seen.add(sid)
            plan.append(Scenario(sid, a.name, norm, float(eps), dict(a.params)))
    return plan
