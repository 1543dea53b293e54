"""The poisoning family: poison the training data, train the recipe's model on it, measure, mitigate.

For a trainable model (a recipe, ``model: {zoo: NAME, ...}``) each poisoning attack of the section
runs at each of its rates: the training split is poisoned (``advkit.attacks.poisoning``: BadNets,
Gu, Dolan-Gavitt & Garg 2017, arXiv:1708.06733; blended, Chen, Liu, Li, Lu & Song 2017,
arXiv:1712.05526; label flipping, Biggio, Nelson & Laskov 2011, ACML; the tabular backdoor), the
model is trained on it through the one cached trainer (``advkit.models.cache.train_recipe``), and
its clean accuracy and the attack's success are measured on the test split with 95 % Wilson
intervals (DESIGN §4). Each named mitigation then runs against each poisoned model: fine-pruning
(Liu, Dolan-Gavitt & Garg 2018, RAID), Neural Cleanse with unlearning (Wang et al. 2019, IEEE S&P),
activation clustering (Chen et al. 2018, arXiv:1811.03728), spectral signatures (Tran, Li &
Madry 2018, NeurIPS), SPECTRE (Hayase et al. 2021, ICML) and label consistency against a model
trained on the defender's clean data (``defenses.detectors.label_consistency``), these four
followed by retraining without the samples they flag, and STRIP (Gao et al. 2019, ACSAC), a test-time filter
that rejects inputs whose prediction survives blending with clean images. A clean
model trained with the same recipe on the same (unpoisoned) data is the reference. Example::

    model: {zoo: cnn-small, epochs: 10}
    poisoning:
      attacks:
        - {name: badnets, rates: [0.05, 0.1], params: {target: 0}}
        - {name: label_flip, rates: [0.1]}
      mitigations:
        - fine_pruning
        - {name: spectral_signatures, params: {expected_rate: 0.15}}
        - {name: neural_cleanse, on_clean: true}             # also on the clean model
        - {name: neural_cleanse, label: nc-prune, repair: prune}
        - {name: strip, params: {n_overlays: 50}}          # rejects triggered inputs at test time
      training: {lr_schedule: cyclic, optimizer: adam}   # recipe settings the model section lacks
      defender_share: 0.1   # share of the training split held out as the defender's clean data

Stages (stable ids): ``poisoning/clean/train`` and ``/measure``; per attack and rate
``poisoning/LABEL/rate=R/train``, ``.../measure`` and ``.../mitigation=KEY`` (``on_clean``:
``poisoning/clean/mitigation=KEY``). Every stage draws
its randomness from its own id (the poison from its train stage's id), and trained models are
cached by a hash of data, recipe and seed, so a resumed audit equals an uninterrupted one.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.report import Report, ScenarioResult
from advkit.audit.spec_sections import Entry, RecipeOverrides, _Strict, require_distinct
from advkit.errors import AdvkitError, AuditSpecError, short
from advkit.threat_tags import BACKDOOR_POISONING

MITIGATIONS = ("fine_pruning", "neural_cleanse", "strip", "label_consistency",
               "activation_clustering", "spectral_signatures", "spectre")
REPAIRS = ("unlearn", "prune")  # what Neural Cleanse does with the triggers it flags
IMAGE_ONLY = ("badnets", "blended")  # attacks (and Neural Cleanse) that stamp image triggers


class PoisonAttackSpec(Entry):
    """One poisoning attack (a registry name of the poisoning family) at one or more rates."""

    rates: list[float]

    @field_validator("rates")
    @classmethod
    def _rates(cls, v):
        if not v:
            raise ValueError("rates needs at least one share of the training set, e.g. [0.1]")
        if any(not 0 < r <= 1 for r in v):
            raise ValueError("each rate is a share of the training set in (0, 1]")
        return sorted(set(float(r) for r in v))

    @field_validator("params")
    @classmethod
    def _params(cls, v):
        if "rate" in v:
            raise ValueError("the rate comes from 'rates'; remove 'rate' from params")
        return v


class MitigationSpec(Entry):
    """One mitigation: a name of ``MITIGATIONS`` and its parameters. ``repair`` (Neural Cleanse
    only): ``unlearn`` (the default) or ``prune`` the flagged classes' triggers; ``on_clean``:
    also run it against the clean reference model (its false alarms and its cost when there is
    nothing to remove); ``label`` names its stages (default: the name)."""

    repair: str | None = None
    on_clean: bool = False

    @model_validator(mode="after")
    def _repair(self):
        if self.repair is not None:
            if self.name != "neural_cleanse":
                raise ValueError("repair applies to neural_cleanse only (unlearn or prune its "
                                 "flagged classes' triggers); remove it")
            if self.repair not in REPAIRS:
                raise ValueError(f"repair must be one of {', '.join(REPAIRS)}")
        return self


class PoisoningSpec(_Strict):
    attacks: list[PoisonAttackSpec] = Field(min_length=1)
    mitigations: list[MitigationSpec] = Field(default_factory=list)
    training: RecipeOverrides = Field(default_factory=RecipeOverrides)
    defender_share: float = Field(default=0.1, gt=0, lt=0.5)

    @field_validator("mitigations", mode="before")
    @classmethod
    def _shorthand(cls, v):
        return [{"name": m} if isinstance(m, str) else m for m in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _distinct(self):
        keys = [a.key for a in self.attacks]
        require_distinct(keys, "attacks")
        if "clean" in keys:
            raise ValueError("'clean' names the clean reference model; choose another label")
        require_distinct([m.key for m in self.mitigations], "mitigations")
        return self


def check_section(sec: PoisoningSpec, source: str) -> None:
    """Every attack and mitigation is known and builds with its parameters at every rate."""
    from advkit import registry

    known = registry.list("poisoning")
    for i, a in enumerate(sec.attacks):
        if a.name not in known:
            raise AuditSpecError(f"{source}.attacks[{i}].name: unknown poisoning attack "
                                 f"{short(a.name)}; poisoning attacks: {', '.join(known)}")
        for r in a.rates:
            try:
                registry.create(a.name, **a.params, rate=r)
            except AdvkitError as exc:
                raise AuditSpecError(f"{source}.attacks[{i}] ({a.key}, rate {r:g}): {exc}") from None
    for i, m in enumerate(sec.mitigations):
        if m.name not in MITIGATIONS:
            raise AuditSpecError(f"{source}.mitigations[{i}]: unknown mitigation {short(m.name)}; "
                                 f"mitigations: {', '.join(MITIGATIONS)}")
        try:
            registry.create(m.name, **m.params)
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}.mitigations[{i}] ({m.name}): {exc}") from None


def recipe_for(spec, sec: PoisoningSpec, source: str = "poisoning"):
    """The recipe every model of this family is trained with; AuditSpecError when the model is
    not trainable (a file or the user's class)."""
    from advkit.models.cache import Recipe

    m = spec.model
    if m.zoo is None:
        given = m.path or m.class_
        raise AuditSpecError(
            f"{source}: the model comes from {short(given)}, which advkit cannot retrain; the "
            "poisoning family trains models on poisoned data, so it needs a recipe: model: "
            "{zoo: NAME, epochs: N, lr: LR, batch_size: B} (zoo models: mlp, cnn-small, lenet, "
            "cnn-madry, cnn-wong), or remove the poisoning section")
    try:
        return Recipe.from_spec(m, **sec.training.model_dump())
    except AdvkitError as exc:
        raise AuditSpecError(f"{source}: the model recipe: {exc}") from None


def _mitigation(m: MitigationSpec) -> dict:
    """A mitigation stage's parameters (``repair`` only where given, so stage keys of entries
    without one are those they had before it existed)."""
    out = {"mitigation": m.name, "mitigation_params": dict(m.params), "mitigation_key": m.key}
    return {**out, "repair": m.repair} if m.repair is not None else out


@family
class PoisoningFamily(Family):
    """Training-data poisoning (AML.T0020) and backdoors planted through it (AML.T0018)."""

    name = "poisoning"
    gpu = True  # gradient attacks and training
    order = 40
    threat = BACKDOOR_POISONING  # AML.T0020 Poison Training Data (related: AML.T0018 backdoors)

    def parse(self, data, *, source: str) -> PoisoningSpec:
        sec = validate_section(PoisoningSpec, data, source=source, module="poisoning",
                               expected="'attacks' (and optionally 'mitigations', 'training')")
        check_section(sec, source)
        return sec

    def plan(self, spec) -> list[Scenario]:
        sec: PoisoningSpec = self.section(spec)
        recipe = recipe_for(spec, sec).as_dict()
        common = {"recipe": recipe, "defender_share": sec.defender_share}
        backdoors = {a.key: {"name": a.name, "params": {**a.params, "rate": a.rates[0]}}
                     for a in sec.attacks}
        out = [self._stage("poisoning/clean/train", "train", "none", common),
               self._stage("poisoning/clean/measure", "measure", "none",
                           {**common, "triggers": backdoors}, deps=("poisoning/clean/train",))]
        for m in sec.mitigations:
            if m.on_clean:
                out.append(self._stage(f"poisoning/clean/mitigation={m.key}", "mitigation",
                                       "none", {**common, **_mitigation(m)},
                                       deps=("poisoning/clean/train",)))
        for a in sec.attacks:
            for r in a.rates:
                base = f"poisoning/{a.key}/rate={r:g}"
                p = {**common, "label": a.key, "attack_params": {**a.params, "rate": r}}
                train = f"{base}/train"
                out.append(self._stage(train, "train", a.name, p))
                out.append(self._stage(f"{base}/measure", "measure", a.name, p, deps=(train,)))
                for m in sec.mitigations:
                    out.append(self._stage(f"{base}/mitigation={m.key}", "mitigation", a.name,
                                           {**p, **_mitigation(m)}, deps=(train,)))
        return out

    def _stage(self, sid, kind, attack, params, deps=()) -> Scenario:
        return Scenario(sid, attack, "none", None, params, kind=kind, family=self.name,
                        deps=tuple(deps))

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        from advkit.audit import poisoning_stages

        poisoning_stages.check_data(plan, ctx)  # before any stage: attacks that fit the data
        return plan

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        from advkit.audit import poisoning_stages

        return poisoning_stages.run_stage(sc, ctx, deps)

    def results(self, records, ctx: AuditContext) -> list[ScenarioResult]:
        from advkit.audit import poisoning_report

        return poisoning_report.results(records)

    def report(self, report: Report, records, ctx: AuditContext) -> None:
        from advkit.audit import poisoning_report

        poisoning_report.add_to(report, records)
