"""The plan against the target's capabilities, checked once the model is loaded and before any
scenario runs.

Each scenario needs what its attack ``requires`` (the ensemble: what each of its stages requires).
The rule for a scenario the target cannot run:

- **attacks the user named** (``attacks``, ``ensemble.attacks``) run as named or are refused: one
  ``AuditSpecError`` lists every such scenario and the registered attacks that run on the target;
- **attacks advkit chose** are adapted, and the report says so: the ensemble's standard stages
  (APGD-CE and APGD-T need gradients; on a target with scores only Square replaces them, as in
  AutoAttack's black-box version) always; every scenario when the spec has ``adapt: true`` (the
  built-in default audit): a budgeted attack is replaced by the first registered attack that runs
  on the target at the same norm and eps (its ``suggest`` first: Square), else dropped.

On a labels-only target only the decision-based attacks run (HopSkipJump, Boundary, Sign-OPT): an
explicit request for anything else is refused; an adapted plan replaces every scenario it cannot
run by one HopSkipJump run at the scenario's norm (another minimum-norm decision-based attack where
only it takes the norm): a minimum-norm attack, whose per-point norms answer every eps of that
norm; the report says so. On a target that answers scores a minimum-norm scenario is dropped, not
replaced: Square already replaces the budgeted ones, and a decision-based run on top would add its
queries to every default audit of a model without gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advkit import registry
from advkit.attacks.support import (
    capability_names,
    describe,
    needs_text,
    none_registered,
    requires,
    runnable_attacks,
)
from advkit.audit.plan import Scenario
from advkit.audit.report import Finding, Report, Section, Table
from advkit.errors import AdvkitError, AuditSpecError
from advkit.evaluation.ensemble import standard_stages

GRADIENT_STAGES = ["apgd", "apgd-t"]  # the standard cascade on a target with gradients


@dataclass(frozen=True)
class Change:
    """One planned scenario (or ensemble stage) the target could not run, and what became of it."""

    scenario: str  # the planned scenario's id
    attack: str  # the attack (for an ensemble stage: the stage's attack)
    missing: tuple[str, ...]  # the capabilities the target lacks
    action: str  # substituted | dropped | stages replaced | stages dropped | stage dropped
    replacement: str | None  # what runs instead (a scenario id or the ensemble's stages)
    reason: str = ""


@dataclass
class CapabilityPlan:
    """The runnable plan for one target and the changes made to get it."""

    target: str
    capabilities: frozenset[str]
    plan: list[Scenario]
    changes: list[Change] = field(default_factory=list)
    working: list[str] = field(default_factory=list)  # registered evasion attacks it can run

    @property
    def nothing_runs(self) -> bool:
        return not self.plan

    def summary(self) -> str:
        """What was substituted or dropped and why, as sentences (no numbers formatted)."""
        lacks = [c for c in self._all() if c not in self.capabilities]
        lines = [f"The target {self.target} offers {describe(self.capabilities)}"
                 + (f" (no {', '.join(lacks)})." if lacks else ".")]
        if self.nothing_runs:
            why = (none_registered(self.capabilities) if not self.working else
                   "none of the planned scenarios runs on this target")
            lines.append(f"No evasion attack could run: {why}.")
        groups: dict[tuple, list[str]] = {}
        for c in self.changes:
            rep = c.replacement.split("/")[0] if c.action == "substituted" else c.replacement
            how = ("at the same budgets" if "eps=" in (c.replacement or "") else
                   "once at the same norm (minimum norm: its per-point norms answer every eps)")
            groups.setdefault((c.attack, c.missing, c.action, rep, c.reason, how), []).append(
                c.scenario)
        for (attack, missing, action, rep, reason, how), ids in groups.items():
            needs, where = ", ".join(missing), _ids(ids)
            if action == "substituted":
                lines.append(f"{attack} needs {needs}: {rep} ran instead {how} ({where}).")
            elif action == "stages replaced":
                lines.append(f"The ensemble's standard stages (APGD-CE, APGD-T) need {needs}: "
                             f"{rep} ran instead ({where}).")
            elif action == "stages dropped":
                lines.append(f"The ensemble's standard stages (APGD-CE, APGD-T) need {needs}: "
                             f"dropped; its other stages ran ({where}).")
            elif action == "stage dropped":
                lines.append(f"The ensemble's stage {attack} needs {needs}: dropped ({where}).")
            else:  # (the reason for a labels-only target was said once above)
                said = self.nothing_runs and reason == none_registered(self.capabilities)
                lines.append(f"{attack} needs {needs}: dropped{'' if said else ', ' + reason} "
                             f"({where}).")
        if self.changes and not self.nothing_runs:
            lines.append("Robust accuracy measured by black-box attacks only is an upper bound "
                         "a gradient attack on the same model may lower.")
        return " ".join(lines)

    @staticmethod
    def _all() -> tuple[str, ...]:
        return ("gradients", "logits", "probabilities", "labels")

    def section(self) -> Section | None:
        if not self.changes and not self.nothing_runs:
            return None
        rows = [[c.scenario, c.attack, ", ".join(c.missing), c.action, c.replacement or ""]
                for c in self.changes]
        table = Table(columns=["planned scenario", "attack", "target lacks", "action",
                               "runs instead"], rows=rows, title="Scenarios adapted")
        return Section(title="Attacks adapted to the target", text=self.summary(),
                       tables=[table] if rows else [])

    def finding(self) -> Finding | None:
        if not self.changes and not self.nothing_runs:
            return None
        fix = ("audit a model that offers gradients (e.g. the original PyTorch model, or a linear "
               "scikit-learn model) for white-box attacks" if self.working else
               "audit a model that answers scores (probabilities or logits) or gradients")
        return Finding(check="capability_plan", severity="warning", metric="scenarios adapted",
                       value=float(len({c.scenario for c in self.changes})), threshold=0.0,
                       why=self.summary(),
                       fix=fix, passed=False)

    def add_to(self, report: Report) -> None:
        """The section (first) and the finding, when anything was adapted."""
        section, finding = self.section(), self.finding()
        if section is not None:
            report.sections.insert(0, section)
        if finding is not None:
            report.findings.append(finding)


def _missing(names, has: frozenset[str]) -> tuple[str, ...]:
    need = frozenset().union(*(requires(_stage_name(n)) for n in names)) if names else frozenset()
    return tuple(sorted(need - has))


def _stage_name(stage) -> str:
    return stage if isinstance(stage, str) else stage["name"]


def _substitute(sc: Scenario, has: frozenset[str], params: dict) -> Scenario | None:
    """The first registered attack the target can run at the scenario's norm and eps (the
    attack's own ``suggest`` first), as a scenario; None for a minimum-norm attack (no eps)."""
    if sc.eps is None:
        return None
    prefer = getattr(registry.get(sc.attack).cls, "suggest", None)
    names = runnable_attacks(has)
    for name in ([prefer] if prefer in names else []) + [n for n in names if n != prefer]:
        p = dict(params.get(name, {}))
        try:
            registry.create(name, eps=sc.eps, norm=sc.norm.lower(), **p)
        except (AdvkitError, TypeError):  # no eps/norm, or not this norm
            continue
        return Scenario(f"{name}/{sc.norm}/eps={sc.eps:g}", name, sc.norm, sc.eps, p)
    return None


DECISION_FIRST = "hopskipjump"  # the minimum-norm replacement on a labels-only target


def _substitute_minimum_norm(sc: Scenario, has: frozenset[str], params: dict) -> Scenario | None:
    """On a labels-only target, a registered minimum-norm attack that runs on it at the
    scenario's norm (HopSkipJump first), as one scenario for all the scenarios of that norm; None
    elsewhere or when none does."""
    from advkit.audit.plan import attack_norm

    if not has <= {"labels"}:
        return None
    names = [n for n in runnable_attacks(has)
             if getattr(registry.get(n).cls, "minimum_norm", False)]
    names.sort(key=lambda n: n != DECISION_FIRST)
    for name in names:
        p = dict(params.get(name, {}))
        sub = Scenario(f"{name}/{sc.norm}", name, sc.norm, None, p, label=name)
        try:
            if attack_norm(name, sub.attack_params()) != sc.norm:
                continue
        except (AdvkitError, TypeError):  # not this norm
            continue
        return sub
    return None


def _why_dropped(sc: Scenario, has: frozenset[str]) -> str:
    works = runnable_attacks(has)
    if not works:
        return none_registered(has)
    if sc.eps is None:
        if has <= {"labels"}:
            return f"no minimum-norm attack that runs on this target takes {sc.norm}"
        return ("a minimum-norm attack; a decision-based one (hopskipjump) replaces it only on a "
                "labels-only target; name it in attacks to run it here")
    return f"no attack that runs on this target ({', '.join(works)}) takes {sc.norm} budgets"


def _ids(ids: list[str]) -> str:
    if len(ids) <= 3:
        return ", ".join(ids)
    return f"{ids[0]}, {ids[1]} ... {ids[-1]} ({len(ids)} scenarios)"


def _refuse(target: str, has: frozenset[str], problems: dict[str, list[str]]) -> AuditSpecError:
    items = "\n".join(f"  - {what}: {_ids(ids)}" for what, ids in problems.items())
    works = runnable_attacks(has)
    if works:
        fix = (f"attacks that run on this target: {needs_text(works)}. Fix: name only those in "
               "attacks (and ensemble.attacks), or set adapt: true to replace or drop the others "
               "(the report then says which and why)")
    else:
        fix = (f"{none_registered(has)}. Fix: audit such a model, or set adapt: true to get a "
               "report that says no evasion attack could run")
    return AuditSpecError(f"the target {target} offers only {describe(has)}, and the plan asks "
                          f"for more (checked before anything runs):\n{items}\n{fix}")


def check_plan(plan: list[Scenario], capabilities, *, adapt: bool = False,
               params: dict[str, dict] | None = None, target: str = "model") -> CapabilityPlan:
    """The scenarios of ``plan`` that run on a target with ``capabilities``; see the module's
    rules. ``params``: the parameters of replacement attacks by name (the spec's
    ``adapt.params``); ``target``: the model's name for messages. AuditSpecError (one, listing
    every scenario the target cannot run and the attacks that would work) for an explicit
    request the target cannot serve."""
    has = capability_names(capabilities)
    params = params or {}
    out = CapabilityPlan(target=target, capabilities=has, plan=[],
                         working=runnable_attacks(has))
    seen: set[str] = set()
    problems: dict[str, list[str]] = {}
    replacements: list[Scenario] = []  # kept after the plan's own (a named one keeps its params)

    def keep(sc: Scenario) -> None:
        if sc.id not in seen:
            seen.add(sc.id)
            out.plan.append(sc)

    def refuse(what: str, sid: str) -> None:
        problems.setdefault(what, []).append(sid)

    for sc in plan:
        if sc.kind == "ensemble":
            _ensemble(sc, has, adapt, params, out, keep, refuse)
            continue
        missing = _missing([sc.attack], has)
        if not missing:
            keep(sc)
        elif not adapt:
            refuse(f"{sc.attack} needs {', '.join(missing)}", sc.id)
        else:
            sub = _substitute(sc, has, params) or _substitute_minimum_norm(sc, has, params)
            if sub is not None:
                replacements.append(sub)
                out.changes.append(Change(sc.id, sc.attack, missing, "substituted", sub.id))
            else:
                out.changes.append(Change(sc.id, sc.attack, missing, "dropped", None,
                                          _why_dropped(sc, has)))
    if problems:
        raise _refuse(target, has, problems)
    for sub in replacements:
        keep(sub)
    return out


def _ensemble(sc: Scenario, has, adapt, params, out: CapabilityPlan, keep, refuse) -> None:
    standard = sc.params.get("version") == "standard"
    stages = standard_stages(has, sc.norm.lower()) if standard else []
    extra = list(sc.params.get("attacks") or [])
    runnable = [a for a in extra if not _missing([a], has)]
    for a in extra:
        if a in runnable:
            continue
        missing = _missing([a], has)
        if not adapt:
            refuse(f"the ensemble's stage {_stage_name(a)} needs {', '.join(missing)}", sc.id)
        else:
            out.changes.append(Change(sc.id, _stage_name(a), missing, "stage dropped", None))
    if not stages and not runnable:
        missing = _missing(GRADIENT_STAGES + ["square"] if standard else extra, has)
        if not adapt:
            refuse("the ensemble has no stage that runs on this target (its standard stages "
                   "need gradients, or scores at Linf or L2)", sc.id)
        else:
            why = (none_registered(has) if not out.working else
                   f"no attack that runs on this target ({', '.join(out.working)}) takes "
                   f"{sc.norm} budgets")
            out.changes.append(Change(sc.id, "ensemble", missing, "dropped", None, why))
        return
    if standard and stages != GRADIENT_STAGES:
        specs = [{"name": n, "params": params[n]} if params.get(n) else n for n in stages]
        out.changes.append(Change(sc.id, "apgd, apgd-t", _missing(GRADIENT_STAGES, has),
                                  "stages replaced" if stages else "stages dropped",
                                  ", ".join(stages) or None))
        sc = Scenario(sc.id, sc.attack, sc.norm, sc.eps,
                      {**sc.params, "attacks": specs + runnable, "version": "custom",
                       "replaces": list(GRADIENT_STAGES)}, kind="ensemble")
    elif runnable != extra:
        sc = Scenario(sc.id, sc.attack, sc.norm, sc.eps, {**sc.params, "attacks": runnable},
                      kind="ensemble")
    keep(sc)


def check_subject(spec, subject) -> CapabilityPlan:
    """``check_plan`` for an audit spec and its loaded subject (``runner.AuditSubject``)."""
    from advkit.audit.plan import make_plan

    return check_plan(make_plan(spec), subject.target.capabilities, adapt=spec.adapt.enabled,
                      params=spec.adapt.params, target=subject.target.model_name)
