"""The privacy_defenses family: the privacy and extraction scenarios re-run against each defense.

Each entry of the section names a defense against membership inference or model stealing; the
family builds the defended model and re-runs the spec's ``privacy`` membership attacks (``loss``,
``entropy``, ``lira``, ``rmia``) and its ``extraction`` Copycat budgets against it, on the same
members, non-members and query draws as the undefended run, so the two differ by the defense
alone. Defenses:

- ``dp-sgd``: the model's recipe trained with DP-SGD (Abadi et al. 2016, ACM CCS) through
  Opacus (``advkit[privacy]``), params those of ``advkit.defenses.training.dp.DPSGD``; the
  accountant's epsilon is recorded and shown beside the attacks' empirical epsilon lower bound
  (Jagielski, Ullman & Oprea 2020, NeurIPS), which it must bound;
- ``weight-decay`` (``params: {weight_decay: W}``) and ``early-stopping`` (``params: {epochs:
  E}``, fewer than the recipe's): the recipe's regularisation knobs (Yeom et al. 2018, IEEE CSF:
  membership leakage grows with overfitting);
- output hardening (``output-rounding``, ``output-topk``, ``labels-only``,
  ``advkit.defenses.output``): the audited model behind hardened answers (Tramèr et al. 2016,
  USENIX Security; Choquette-Choo et al. 2021, ICML, for what labels alone still leak).

LiRA and RMIA compare the target's answers with reference models trained like it (Carlini et
al. 2022: the attacker knows the training recipe), so their references follow the defense:

- a training defense (``dp-sgd``, ``weight-decay``, ``early-stopping``) changes how the model is
  trained, so the references are trained with the **defended recipe** too, in their own stage
  ``privacy_defenses/KEY/references/n=M`` (DP-SGD references one by one through Opacus, the
  others in the shared vmap pass of ``advkit.attacks.privacy.shadow`` with the defended weight
  decay or epochs), on the same pool as the privacy family's references;
- an output defense leaves the model as it is: the references stay the privacy family's
  (``privacy/references/n=M``), only the target's answers change (rounded, top-k); the attacker
  knows the API's hardening and reads the references' answers through it too
  (``advkit.audit.privacy_answers``), so that both are on one scale;
- against ``labels-only`` (no probabilities) LiRA and RMIA cannot score: the stage records
  "not applicable: needs scores" and no figure.

The report puts utility against leakage: test accuracy against the TPR at 1 % FPR of the
strongest re-run membership attack, and against Copycat's fidelity. Example::

    model: {zoo: mlp, epochs: 40}
    privacy: {members: 150, membership: [{name: loss}, {name: entropy}]}
    extraction: {attacks: [{name: copycat, queries: [300]}]}
    privacy_defenses:
      defenses:
        - {name: dp-sgd, params: {noise_multiplier: 1.0, max_grad_norm: 1.0}}
        - {name: weight-decay, params: {weight_decay: 0.01}}
        - {name: output-rounding, params: {decimals: 1}}

Stages (stable ids): ``privacy_defenses/KEY/model`` (the defended model: its accuracy on the
evaluated points, the DP facts), ``privacy_defenses/KEY/references/n=M`` (training defenses with
LiRA or RMIA), ``privacy_defenses/KEY/membership/LABEL`` and
``privacy_defenses/KEY/extraction/LABEL/queries=Q`` (``KEY``: the entry's ``label`` or name).
"""

from __future__ import annotations

import time

from pydantic import Field, model_validator

from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.spec_sections import Entry, _Strict, check_entries, require_distinct
from advkit.errors import AdvkitError, AuditSpecError, short
from advkit.threat_tags import MITIGATES_MEMBERSHIP

TRAINING = ("dp-sgd", "weight-decay", "early-stopping")
OUTPUT = ("output-rounding", "output-topk", "labels-only")
DEFENSES = TRAINING + OUTPUT
RERUN = ("loss", "entropy", "lira", "rmia")  # membership attacks re-run against a defense
REFERENCE_ATTACKS = ("lira", "rmia")  # these need reference models (and the target's scores)
NEEDS_SCORES = "not applicable: needs scores"


class PrivacyDefenseEntry(Entry):
    pass


class PrivacyDefensesSpec(_Strict):
    defenses: list[PrivacyDefenseEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self):
        require_distinct([d.key for d in self.defenses], "defenses")
        return self


def _check_defense(d: PrivacyDefenseEntry) -> None:
    """A defense entry's parameters: the output hardening built once, or the recipe changes."""
    if d.name in OUTPUT:
        from advkit import registry

        registry.create(d.name, **d.params)
    else:
        _overrides(d)


def _overrides(entry: PrivacyDefenseEntry) -> dict:
    """The recipe settings a training entry changes (AdvkitError for bad params)."""
    from advkit.errors import InvalidParameterError, UnknownParameterError

    p = entry.params
    if entry.name == "dp-sgd":
        return {"dp": dict(p)}
    knob = "weight_decay" if entry.name == "weight-decay" else "epochs"
    for k, v in p.items():
        if k != knob:
            raise UnknownParameterError(entry.name, k, v, [knob])
    if knob not in p:
        raise InvalidParameterError(knob, None, f"a value: {entry.name} sets the recipe's "
                                    f"{knob}, e.g. params: {{{knob}: "
                                    f"{'0.01' if knob == 'weight_decay' else '5'}}}")
    return {knob: p[knob]}


def defended_recipe(spec, entry: PrivacyDefenseEntry) -> dict:
    """The recipe a training entry trains, as plain data; AuditSpecError when it cannot."""
    from advkit.audit.families.privacy import recipe_for

    base = recipe_for(spec, "privacy_defenses")
    try:
        changed = _overrides(entry)
        if entry.name == "early-stopping" and changed["epochs"] >= base.epochs:
            raise AdvkitError(f"epochs {changed['epochs']} must be fewer than the recipe's "
                              f"{base.epochs} to stop early")
        return type(base)(**{**base.as_dict(), **changed}).as_dict()
    except AdvkitError as exc:
        raise AuditSpecError(f"privacy_defenses: {entry.key}: {exc}") from None


@family
class PrivacyDefensesFamily(Family):
    """Defenses against membership inference and extraction, measured by re-running both."""

    name = "privacy_defenses"
    order = 75  # after privacy and extraction: the report reads their undefended figures
    threat = MITIGATES_MEMBERSHIP

    def parse(self, data, *, source: str) -> PrivacyDefensesSpec:
        sec = validate_section(PrivacyDefensesSpec, data, source=source,
                               module="privacy_defenses", expected="'defenses'")
        check_entries(sec.defenses, source=source, field="defenses", noun="privacy defense",
                      known=DEFENSES, check=_check_defense)
        return sec

    def plan(self, spec) -> list[Scenario]:
        from advkit.audit.families.extraction import ExtractionFamily
        from advkit.audit.families.privacy import PrivacyFamily

        sec: PrivacyDefensesSpec = self.section(spec)
        fams = getattr(spec, "families", None) or {}
        members = [sc for sc in (PrivacyFamily().plan(spec) if "privacy" in fams else [])
                   if sc.kind == "membership" and sc.attack in RERUN]
        steals = [sc for sc in (ExtractionFamily().plan(spec) if "extraction" in fams else [])
                  if sc.attack == "copycat"]
        if not members and not steals:
            raise AuditSpecError(
                "privacy_defenses: re-runs the privacy section's membership attacks (loss, "
                "entropy, lira, rmia) and the extraction section's copycat budgets against each "
                "defense, and the spec has none; add e.g. privacy: {membership: [{name: loss}]}")
        out = []
        for d in sec.defenses:
            recipe = None
            if d.name in TRAINING:
                if spec.model.zoo is None:
                    raise AuditSpecError(
                        f"privacy_defenses: {d.key} retrains the model, and the model comes "
                        f"from {short(spec.model.path or spec.model.class_ or spec.model.url)}, "
                        "which advkit cannot retrain: give a recipe (model: {zoo: NAME}) or "
                        "keep to output hardening (" + ", ".join(OUTPUT) + ")")
                recipe = defended_recipe(spec, d)
            base = f"privacy_defenses/{d.key}"
            common = {"defense": d.name, "key": d.key, "defense_params": dict(d.params),
                      "recipe": recipe}
            out.append(Scenario(f"{base}/model", d.name, "none", None, common, kind="model",
                                family=self.name))
            refs: dict[int, str] = {}
            for sc in members:
                p = {**common, **sc.params, "recipe": recipe, "undefended": sc.id}
                deps = (f"{base}/model",)
                if sc.attack in REFERENCE_ATTACKS:
                    p, deps = self._with_references(sc, p, deps, base, recipe, refs, out)
                out.append(Scenario(f"{base}/membership/{sc.params['label']}", sc.attack, "none",
                                    None, p, kind="membership", family=self.name, deps=deps))
            for sc in steals:
                tail = sc.id.removeprefix("extraction/")
                out.append(Scenario(f"{base}/extraction/{tail}", sc.attack, "none", None,
                                    {**common, **sc.params, "undefended": sc.id}, kind="extract",
                                    family=self.name, deps=(f"{base}/model",)))
        return out

    def _with_references(self, sc: Scenario, p: dict, deps: tuple, base: str, recipe,
                         refs: dict[int, str], out: list[Scenario]) -> tuple[dict, tuple]:
        """A LiRA/RMIA stage's parameters and deps: a training defense trains its own
        references with the defended recipe (one stage per reference count, planned into
        ``out``); an output defense keeps the privacy family's references."""
        n = sc.params["settings"]["n_reference"]
        if recipe is None:  # output hardening: the same references, only the answers change
            rid = f"privacy/references/n={n}"
            return {**p, "reference_recipe": sc.params["recipe"], "references": rid}, (
                *deps, rid)
        rid = f"{base}/references/n={n}"
        if n not in refs:
            refs[n] = rid
            out.append(Scenario(rid, "references", "none", None,
                                {**{k: p[k] for k in ("defense", "key", "defense_params",
                                                      "recipe", "members")},
                                 "n_reference": n, "reference_recipe": recipe,
                                 "references": rid}, kind="references", family=self.name))
        return {**p, "reference_recipe": recipe, "references": rid}, (*deps, rid)

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        from advkit.audit import privacy_stages
        from advkit.audit.families.extraction import steal

        t0 = time.perf_counter()
        head = {"id": sc.id, "kind": sc.kind, "attack": sc.attack, "defense": sc.params["key"],
                "defense_name": sc.params["defense"], "undefended": sc.params.get("undefended")}
        if sc.kind == "references":  # the defended recipe's references: no target needed
            rec = privacy_stages.run_stage(sc, ctx)
            return {**rec, **head, "seconds": time.perf_counter() - t0}
        target, facts = defended_target(sc, ctx)
        if sc.kind == "model":
            from advkit.evaluation.metrics import proportion_of

            pred = target.labels(ctx.x)
            acc = proportion_of(int((pred == ctx.y).sum()), int(ctx.y.shape[0]))
            rec = {**facts, "accuracy": acc.as_dict()}
        elif sc.kind == "membership" and (sc.attack in REFERENCE_ATTACKS
                                          and not target.capabilities.probabilities):
            rec = {"label": sc.params["label"], "not_applicable": NEEDS_SCORES,
                   "notes": [f"{sc.params['label']} against {sc.params['key']}: {NEEDS_SCORES} "
                             "(the target answers labels only; LiRA and RMIA score the true "
                             "class's probability)"]}
        elif sc.kind == "membership":
            d = privacy_stages.split(ctx, sc.params["members"])
            rec = privacy_stages._membership(sc, ctx, d, target)
            if not target.capabilities.probabilities:
                rec["notes"].append("scored from the labels alone (one-hot answers)")
        else:
            rec = steal(sc, ctx, target, draws=sc.params["undefended"])
        return {**rec, **head, "seconds": time.perf_counter() - t0}

    def results(self, records, ctx: AuditContext):
        from advkit.audit import privacy_defenses_report

        return privacy_defenses_report.results(records)

    def report(self, report, records, ctx: AuditContext) -> None:
        from advkit.audit import privacy_defenses_report

        privacy_defenses_report.add_to(report, records, ctx)


def defended_target(sc: Scenario, ctx: AuditContext):
    """(the defended target, facts): the recipe retrained (cached), or the audited target behind
    the output hardening; built once per run and kept in ``ctx.state``."""
    key = ("privacy_defenses", sc.params["key"])
    if key in ctx.state:
        return ctx.state[key]
    p = sc.params
    if p["recipe"] is None:
        from advkit import registry

        hardening = registry.create(p["defense"], **p["defense_params"])
        out = (ctx.subject.target.with_output(hardening), {})
    else:
        from advkit.models.cache import Recipe, train_recipe
        from advkit.models.io import target_for
        from advkit.targets.features import FeatureSpaceTarget

        ds = ctx.subject.dataset
        model, facts = train_recipe(ds.x_train, ds.y_train, Recipe(**p["recipe"]), info=ds.info,
                                    seed=ctx.seed, data_sha256=ds.sha256())
        target = target_for(model, ds, batch_size=ctx.spec.evaluation.batch_size)
        if ds.info.feature_space is not None:
            target = FeatureSpaceTarget(target)
        keep = {k: facts[k] for k in ("cache", "trained_now", "train_seconds", "dp") if k in facts}
        out = (target, {**keep, "recipe": p["recipe"]})
    ctx.state[key] = out
    return out
