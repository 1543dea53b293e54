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
    kind: str = "attack"  # attack | ensemble (evasion); each family names its own kinds
    family: str = "evasion"  # the family that plans and runs it (advkit.audit.families)
    deps: tuple[str, ...] = ()  # ids of earlier stages whose records it needs
    label: str = ""  # how results name it (an attack's second configuration: "pgd#2")

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

    variants: dict[tuple[str, str], list[dict]] = {}  # (attack, norm) -> parameter sets seen
    for a in spec.attacks:
        norm = LpBall(norm=a.norm, eps=0).label  # validates and canonicalises: Linf / L2 / L1
        if not _has_field(a.name, "norm") and getattr(registry.get(a.name).cls, "minimum_norm",
                                                      False):
            norm = attack_norm(a.name, a.params)  # cw-l2 is L2, jsma L0, whatever the spec says
        # two entries of one attack with different parameters are two configurations: the
        # second is labelled name#2 (its own ids, its own curve), not dropped as a duplicate
        seen_params = variants.setdefault((a.name, norm), [])
        if dict(a.params) not in seen_params:
            seen_params.append(dict(a.params))
        k = seen_params.index(dict(a.params))
        label = a.name if k == 0 else f"{a.name}#{k + 1}"
        if not _has_field(a.name, "eps"):
            add(Scenario(f"{label}/{norm}", a.name, norm, None, dict(a.params), label=label))
            continue
        for eps in a.eps:
            add(Scenario(f"{label}/{norm}/eps={eps:g}", a.name, norm, float(eps),
                         dict(a.params), label=label))
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


def norm_label(norm) -> str:
    """Canonical norm label: Linf / L2 / L1 (L0 for attacks that count changed features)."""
    if isinstance(norm, int | float) and not isinstance(norm, bool) and norm == 0:
        return "L0"
    if isinstance(norm, str) and norm.lower() in ("0", "l0"):
        return "L0"
    return LpBall(norm=norm, eps=0).label


def attack_norm(name: str, params: dict[str, Any]) -> str:
    """The norm an attack measures its perturbations in (a minimum-norm attack's distances), from
    its registry entry and the scenario's parameters."""
    init = {f.name for f in dataclasses.fields(registry.get(name).cls) if f.init}
    kw = {k: v for k, v in params.items() if k in init}
    return norm_label(registry.create(name, **kw).norm_p)


@dataclass
class Budgets:
    """What a plan measures per norm: the eps of its budgeted scenarios (attacks and ensemble) and
    the minimum-norm attacks (which answer any eps of their norm through their per-point norms)."""

    eps: dict[str, set[float]] = field(default_factory=dict)
    minimum_norm: dict[str, list[str]] = field(default_factory=dict)

    @property
    def norms(self) -> list[str]:
        return sorted(set(self.eps) | set(self.minimum_norm))

    def answers(self, norm: str, eps: float) -> bool:
        """A norm answers eps when a budgeted scenario ran at eps; with no budgeted scenario in
        that norm, when a minimum-norm attack ran in it."""
        measured = self.eps.get(norm)
        if measured:
            return any(abs(e - eps) <= 1e-9 * max(1.0, abs(eps)) for e in measured)
        return bool(self.minimum_norm.get(norm))

    def describe(self) -> str:
        parts = []
        for norm in self.norms:
            if self.eps.get(norm):
                parts.append(f"{norm}: eps " + ", ".join(f"{e:g}" for e in sorted(self.eps[norm])))
            else:
                parts.append(f"{norm}: any eps (minimum-norm attacks "
                             f"{', '.join(self.minimum_norm[norm])})")
        return "; ".join(parts) or "no budgeted or minimum-norm attack"


def plan_budgets(plan: list[Scenario]) -> Budgets:
    out = Budgets()
    for sc in plan:
        if sc.eps is not None:
            out.eps.setdefault(sc.norm, set()).add(float(sc.eps))
        elif sc.kind == "attack" and getattr(registry.get(sc.attack).cls, "minimum_norm", False):
            norm = attack_norm(sc.attack, sc.attack_params())
            out.minimum_norm.setdefault(norm, []).append(sc.attack)
    return out
