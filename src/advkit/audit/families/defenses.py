"""The defenses family: every budgeted evasion scenario against each defended model, before/after.

The spec's ``defenses`` section (``advkit.audit.defenses_section``) lists defenses; each budgeted
evasion scenario of the evasion family's plan runs against the undefended model (the evasion
family) and against each defended one: input transforms under adaptive (BPDA/EOT, Athalye,
Carlini & Wagner 2018, ICML) and naive attack (Guo et al. 2018, ICLR; Xu, Evans & Qi 2018, NDSS),
output hardening (score-based attacks through it, and transfer), randomized-smoothing
certification (Cohen, Rosenfeld & Kolter 2019, ICML) and training defenses when the model is a
recipe (Madry et al. 2018, ICLR; Wong, Rice & Kolter 2020, ICLR). The stages are in
``advkit.audit.defenses_stages``; the report (a before/after table with each defense's cost, a
finding per defense, a verdict per defense by the evasion rule) in
``advkit.audit.defenses_report``. Example::

    attacks: [{name: pgd, eps: [0, 0.1, 0.2], params: {steps: 20}}]
    defenses:
      - {name: jpeg, params: {quality: 75}}
      - {name: output-rounding, params: {decimals: 2}}
      - {name: randomized-smoothing, params: {sigma: 0.25, n: 1000}, points: 100}
      - {name: pgd-at, params: {eps: 0.1, steps: 10}}     # model: {zoo: ...} only
"""

from __future__ import annotations

from advkit.audit import defenses_report
from advkit.audit.defenses_section import DefensesSection, parse_section
from advkit.audit.defenses_stages import budgeted_scenarios, plan_stages, prepare_stages, run_stage
from advkit.audit.families.base import AuditContext, Family, family
from advkit.audit.plan import Scenario, make_plan
from advkit.audit.report import Report, ScenarioResult
from advkit.errors import AdvkitError, AuditSpecError, short
from advkit.threat_tags import MITIGATES_EVASION


def _recipe(spec, sec: DefensesSection) -> dict | None:
    """The recipe the training defenses retrain; AuditSpecError when the model is a file or the
    user's class (advkit cannot retrain it), before anything runs."""
    training = sec.of_kind("training")
    if not training:
        return None
    m = spec.model
    if m.zoo is None:
        raise AuditSpecError(
            f"defenses: {training[0].key}: a training defense retrains the model, and the model "
            f"comes from {short(m.path or m.class_)}, which advkit cannot retrain; give the model "
            "as a recipe (model: {zoo: NAME, epochs: N}; zoo models: mlp, cnn-small, lenet, "
            "cnn-madry, cnn-wong), or remove the training defense (pgd-at, fast-fgsm)")
    from advkit.models.cache import Recipe

    try:
        return Recipe.from_spec(m).as_dict()
    except AdvkitError as exc:
        raise AuditSpecError(f"defenses: the model recipe: {exc}") from None


def _check_attacks(sec: DefensesSection, plan: list[Scenario]) -> None:
    attacked = [d.key for d in sec.defenses if d.kind != "certify"]
    if attacked and not budgeted_scenarios(plan):
        raise AuditSpecError(
            f"defenses: {', '.join(attacked)} run the evasion attacks against the defended "
            "model, but the plan has no budgeted attack (eps > 0); add one, e.g. attacks: "
            "[{name: pgd, eps: [0, 0.1], params: {steps: 20}}]")


@family
class DefensesFamily(Family):
    """Defenses against evasion, measured against the same attacks as the undefended model."""

    name = "defenses"
    gpu = True  # gradient attacks and training
    order = 25  # after evasion: its report reads the undefended figures the evasion family made
    threat = MITIGATES_EVASION

    def parse(self, data, *, source: str) -> DefensesSection:
        return parse_section(data, source=source)

    def plan(self, spec) -> list[Scenario]:
        sec: DefensesSection = self.section(spec)
        evasion = make_plan(spec)
        _check_attacks(sec, evasion)
        return plan_stages(sec, budgeted_scenarios(evasion), recipe=_recipe(spec, sec))

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        sec: DefensesSection = self.section(ctx.spec)
        return prepare_stages(sec, ctx, _recipe(ctx.spec, sec))

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        return run_stage(sc, ctx, deps)

    def results(self, records, ctx: AuditContext) -> list[ScenarioResult]:
        return defenses_report.results(records, ctx)

    def report(self, report: Report, records, ctx: AuditContext) -> None:
        defenses_report.add_to(report, records, ctx)
