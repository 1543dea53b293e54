"""The watermark family: can the owner prove a copy of the model is theirs (issue 13)?

Adi, Baum, Cisse, Pinkas & Keshet (2018), "Turning Your Weakness Into a Strength: Watermarking
Deep Neural Networks by Backdooring", USENIX Security (``advkit.defenses.watermark``): the spec's
model recipe is trained again on its training split plus ``repeat`` copies of a secret trigger set
of ``k`` inputs uniform in the input bounds with uniformly random labels. The owner claims a
suspect model when the false-claim probability of its agreements with the trigger labels, the
exact tail ``P[Binomial(k, 1/C) >= agreements]``, is below ``threshold``. Stages:

- ``watermark/marked``: the marked model (trained through the shared cached trainer
  ``advkit.models.cache.train_recipe``, with the audited model's seed, so the two differ by the
  trigger set alone): its claim (must hold) and its accuracy on the evaluated points beside the
  audited model's (the utility cost of the mark);
- ``watermark/independent``: the same recipe trained without the trigger set from another seed
  (derived from the audit's seed): its false-claim probability (must be large: the test does not
  accuse an innocent model);
- ``watermark/removal/KEY`` per ``removal`` entry, on the marked model: ``fine-tune`` (``epochs``,
  ``lr``: more training on the clean split; defaults 3 and 1e-4), ``prune`` (``rate``: per-layer
  magnitude pruning, Han et al. 2015; default 0.5) and ``extract`` (Copycat, Correia-Silva et al.
  2018, from the marked model's labels; the params of ``advkit.attacks.privacy.copycat.Copycat``,
  defaults ``queries: 1000, strategy: natural`` and the recipe's architecture): accuracy after,
  agreement with the marked model on the evaluated points, the trigger agreements, the false-claim
  probability and whether the claim still holds.

The trigger set and every removal draw from generators derived from (seed, stage id), so a stage
gives the same record whichever executor runs it. The threshold judges at report time (editing it
leaves the stored stages valid). Refused before any stage runs, once the data is known: a ``k``
so small for the classes that even a model answering every trigger label could not be claimed,
and an ``extract`` budget of natural or adaptive queries above the training split. Example::

    model: {zoo: mlp, kwargs: {hidden: [256]}, epochs: 60}
    watermark:
      k: 50
      repeat: 10
      threshold: 1e-6
      removal: [fine-tune, {name: prune, params: {rate: 0.7}}, extract]
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.spec_sections import Entry, _Strict, check_entries, require_distinct
from advkit.errors import (
    AdvkitError,
    AuditSpecError,
    InvalidParameterError,
    UnknownParameterError,
    check_range,
    short,
)
from advkit.threat_tags import MITIGATES_EXTRACTION

REMOVALS = ("fine-tune", "prune", "extract")
DEFAULTS = {"fine-tune": {"epochs": 3, "lr": 1e-4}, "prune": {"rate": 0.5},
            "extract": {"queries": 1000, "strategy": "natural"}}
STATE = "watermark"


class RemovalEntry(Entry):
    pass


class WatermarkSpec(_Strict):
    # None: the default of advkit.defenses.watermark.TriggerSetWatermark (which validates them)
    k: int | None = None
    repeat: int | None = None
    threshold: float | None = None
    removal: list[RemovalEntry] = Field(default_factory=list)

    @field_validator("removal", mode="before")
    @classmethod
    def _names(cls, v):  # a bare name stands for {name: NAME}
        return [{"name": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _distinct(self):
        require_distinct([r.key for r in self.removal], "removal entries")
        return self

    def watermark(self):
        """The ``TriggerSetWatermark`` of the section (InvalidParameterError for bad values)."""
        from advkit.defenses.watermark import TriggerSetWatermark

        return TriggerSetWatermark(**{k: getattr(self, k) for k in ("k", "repeat", "threshold")
                                      if getattr(self, k) is not None})


def removal_params(entry: RemovalEntry) -> dict:
    """The removal's parameters with its defaults (AdvkitError naming a bad one); ``extract``'s
    are Copycat's, checked once the recipe fills its architecture (``plan``)."""
    p = {**DEFAULTS[entry.name], **entry.params}
    known = DEFAULTS[entry.name]
    if entry.name == "extract":
        from advkit.attacks.privacy.copycat import Copycat
        from advkit.params import declarations

        known = declarations(Copycat)
    for k, v in entry.params.items():
        if k not in known:
            raise UnknownParameterError(entry.name, k, v, sorted(known))
    if entry.name == "extract":
        return p
    if entry.name == "fine-tune":
        check_range("epochs", p["epochs"], lo=1, kind=int)
        check_range("lr", p["lr"], lo=0.0, lo_open=True)
        if not math.isfinite(p["lr"]):
            raise InvalidParameterError("lr", p["lr"], "a finite learning rate > 0")
    else:
        check_range("rate", p["rate"], lo=0.0, hi=1.0)
    return p


@family
class WatermarkFamily(Family):
    """Ownership verification by a trigger-set watermark, and its removal (mitigates
    AML.T0024.002 Extract ML Model)."""

    name = "watermark"
    gpu = True  # trains the recipe twice
    order = 80  # after extraction and privacy_defenses
    threat = MITIGATES_EXTRACTION

    def parse(self, data, *, source: str) -> WatermarkSpec:
        sec = validate_section(WatermarkSpec, data, source=source, module="watermark",
                               expected="'k', 'repeat', 'threshold' and 'removal' (all optional)")
        try:
            sec.watermark()
        except AdvkitError as exc:
            raise AuditSpecError(f"{source}: {exc}") from None
        check_entries(sec.removal, source=source, field="removal", noun="removal attack",
                      known=REMOVALS, check=removal_params)
        return sec

    def plan(self, spec) -> list[Scenario]:
        from advkit.audit.families.extraction import ExtractionAttackSpec, attack_params
        from advkit.audit.families.privacy import recipe_for

        sec: WatermarkSpec = self.section(spec)
        if spec.model.zoo is None:
            raise AuditSpecError(
                "watermark: trains a marked copy of the model's recipe, and the model comes from "
                f"{short(spec.model.path or spec.model.class_ or spec.model.url)}, which advkit "
                "cannot retrain: give a recipe (model: {zoo: NAME}) or remove the section")
        recipe = recipe_for(spec, "watermark").as_dict()
        wm = sec.watermark()
        common = {"k": wm.k, "repeat": wm.repeat, "recipe": recipe}
        out = [Scenario("watermark/marked", "watermark-adi", "none", None, common, kind="marked",
                        family=self.name),
               Scenario("watermark/independent", "none", "none", None, common,
                        kind="independent", family=self.name)]
        for i, r in enumerate(sec.removal):
            p = removal_params(r)
            if r.name == "extract":
                a = ExtractionAttackSpec(name="copycat", params={
                    k: v for k, v in p.items() if k != "queries"})
                p = attack_params(a, spec, p["queries"])
                try:
                    from advkit.attacks.privacy.copycat import Copycat

                    Copycat(**p)
                except AdvkitError as exc:
                    raise AuditSpecError(f"watermark.removal[{i}] ({r.key}): {exc}") from None
            out.append(Scenario(f"watermark/removal/{r.key}", r.name, "none", None,
                                {**common, "label": r.key, "removal_params": p}, kind="removal",
                                family=self.name, deps=("watermark/marked",)))
        return out

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        from advkit.defenses.watermark import false_claim_probability

        pool = ctx.subject.dataset.x_train.shape[0]
        c, wm = ctx.subject.dataset.info.n_classes, self.section(ctx.spec).watermark()
        best = false_claim_probability(wm.k, wm.k, c)  # every trigger label answered
        if best >= wm.threshold:
            need = wm.k + 1
            while false_claim_probability(need, need, c) >= wm.threshold:
                need += 1
            raise AuditSpecError(
                f"watermark: with k={wm.k} triggers and {c} classes the smallest false-claim "
                f"probability, (1/{c})^{wm.k} = {best:.2g}, is not below the threshold "
                f"{wm.threshold:g}, so no model could ever be claimed; raise k to at least "
                f"{need} or the threshold")
        from advkit.audit.families.extraction import check_query_pool

        for sc in plan:
            if sc.attack == "extract":
                p = sc.params.get("removal_params", {})
                check_query_pool("watermark", sc.id, p, p["queries"], pool)
        return plan

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        t0 = time.perf_counter()
        trig = trigger_sets(sc, ctx)
        if sc.kind == "marked":
            model, facts = marked_model(sc, ctx)
            audited = (ctx.clean_pred == ctx.y)
            rec = {**measure(_labeller(model, ctx), ctx, trig), "train": facts,
                   "audited_accuracy": _pdict(int(audited.sum()), int(audited.numel()))}
        elif sc.kind == "independent":
            seed = independent_seed(ctx)
            model, facts = _train(sc, ctx, ctx.subject.dataset.x_train,
                                  ctx.subject.dataset.y_train, seed=seed, tag="")
            rec = {**measure(_labeller(model, ctx), ctx, trig), "train": facts}
        else:
            rec = _removal(sc, ctx, trig)
        return {"id": sc.id, "kind": sc.kind, "attack": sc.attack,
                "label": sc.params.get("label", sc.kind), "k": sc.params["k"],
                "repeat": sc.params["repeat"], **rec, "seconds": time.perf_counter() - t0}

    def results(self, records, ctx: AuditContext):
        from advkit.audit import watermark_report

        return watermark_report.results(records, self._threshold(ctx))

    def report(self, report, records, ctx: AuditContext) -> None:
        from advkit.audit import watermark_report

        watermark_report.add_to(report, records, self._threshold(ctx))

    def _threshold(self, ctx: AuditContext) -> float:
        return self.section(ctx.spec).watermark().threshold


# -- the stages --------------------------------------------------------------------------------
def _pdict(k: int, n: int) -> dict:
    from advkit.evaluation.metrics import proportion_of

    return proportion_of(k, n).as_dict()


def trigger_sets(sc: Scenario, ctx: AuditContext):
    """(trigger set in the target's input space, the same inputs as the model is given them):
    drawn from the generator of ``watermark/trigger``; for tabular data the first is in unit
    space and the second the raw features the model sees (constraints repaired)."""
    from advkit.defenses.watermark import TriggerSet, TriggerSetWatermark
    from advkit.targets.features import FeatureSpaceTarget

    key = (STATE, "trigger", sc.params["k"])
    if key not in ctx.state:
        t, info = ctx.subject.target, ctx.subject.dataset.info
        wm = TriggerSetWatermark(k=sc.params["k"], repeat=sc.params["repeat"])
        seen = wm.trigger_set(tuple(ctx.x.shape[1:]), info.n_classes,
                              bounds=t.contract.bounds,
                              generator=ctx.generator("watermark/trigger"))
        seen = TriggerSet(seen.x.to(ctx.x.dtype), seen.y, seen.n_classes)
        raw = seen
        if isinstance(t, FeatureSpaceTarget):
            raw = TriggerSet(t.to_raw(seen.x).to(ctx.subject.dataset.x_train.dtype), seen.y,
                             seen.n_classes)
        ctx.state[key] = (seen, raw)
    return ctx.state[key]


def independent_seed(ctx: AuditContext) -> int:
    """The independent model's training seed: drawn from (seed, ``watermark/independent``)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.generator("watermark/independent")))


def _train(sc: Scenario, ctx: AuditContext, x, y, *, seed: int, tag: str):
    from advkit.models.cache import Recipe, train_recipe

    model, facts = train_recipe(x, y, Recipe(**sc.params["recipe"]),
                                info=ctx.subject.dataset.info, seed=seed, tag=tag,
                                progress=False)
    keep = {k: facts[k] for k in ("cache", "trained_now", "train_seconds", "seed") if k in facts}
    return model, keep


def marked_model(sc: Scenario, ctx: AuditContext):
    """(the marked model, its training facts): the recipe on the training split plus ``repeat``
    copies of the trigger set, with the audited model's seed; from the cache after the first."""
    from advkit.defenses.watermark import TriggerSetWatermark

    key = (STATE, "marked", sc.params["k"], sc.params["repeat"])
    if key not in ctx.state:
        _, raw = trigger_sets(sc, ctx)
        ds = ctx.subject.dataset
        wm = TriggerSetWatermark(k=sc.params["k"], repeat=sc.params["repeat"])
        xu, yu = wm.training_set(ds.x_train, ds.y_train, raw)
        ctx.state[key] = _train(sc, ctx, xu, yu, seed=ctx.seed, tag="watermark")
    return ctx.state[key]


def _target(model, ctx: AuditContext):
    """A Target of a model that takes the dataset's inputs, in the audited target's input space
    (unit space for tabular data)."""
    from advkit.models.io import target_for
    from advkit.targets.features import FeatureSpaceTarget

    target = target_for(model.eval(), ctx.subject.dataset,
                        batch_size=ctx.spec.evaluation.batch_size)
    return (FeatureSpaceTarget(target) if isinstance(ctx.subject.target, FeatureSpaceTarget)
            else target)


def _labeller(model, ctx: AuditContext):
    """The labels function of ``_target(model, ctx)``."""
    target = _target(model, ctx)

    def labels(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return target.labels(x).long().reshape(-1).cpu()

    return labels


def measure(labels, ctx: AuditContext, trig, reference: torch.Tensor | None = None) -> dict:
    """The trigger agreements and their false-claim probability, the accuracy on the evaluated
    points and (given the marked model's labels there) the agreement with the marked model."""
    from advkit.defenses.watermark import false_claim_probability

    seen, _ = trig
    a = int((labels(seen.x) == seen.y.cpu()).sum())
    pred = labels(ctx.x)
    y = ctx.y.cpu()
    out: dict[str, Any] = {
        "agreements": a, "n_classes": seen.n_classes, "agreement": _pdict(a, seen.k),
        "p_value": false_claim_probability(a, seen.k, seen.n_classes),
        "accuracy": _pdict(int((pred == y).sum()), int(y.numel()))}
    if reference is not None:
        out["fidelity"] = _pdict(int((pred == reference).sum()), int(pred.numel()))
    return out


def _removal(sc: Scenario, ctx: AuditContext, trig) -> dict:
    from advkit.defenses.watermark import fine_tune, prune

    marked, _ = marked_model(sc, ctx)
    reference = _labeller(marked, ctx)(ctx.x)
    p, g, ds = sc.params["removal_params"], ctx.generator(sc.id), ctx.subject.dataset
    extra: dict[str, Any] = {"params": p}
    if sc.attack == "fine-tune":
        model = fine_tune(marked, ds.x_train, ds.y_train, epochs=p["epochs"], lr=p["lr"],
                          batch_size=sc.params["recipe"]["batch_size"], generator=g)
        labels = _labeller(model, ctx)
    elif sc.attack == "prune":
        labels = _labeller(prune(marked, p["rate"]), ctx)
    else:
        from advkit.attacks.privacy.copycat import Copycat
        from advkit.evaluation.fidelity import stolen_labels

        victim = _target(copy.deepcopy(marked), ctx)  # labels only are asked
        attack = Copycat(**p)
        pool = None
        if attack.strategy != "random":
            pool = ctx.target_inputs(ds.x_train).to(torch.float32)
        res = attack.steal(victim, pool=pool, generator=g)
        stolen = res.model.eval()
        labels = lambda x: stolen_labels(stolen, x).cpu()  # noqa: E731
        extra["queries"] = int(res.queries)
    return {**measure(labels, ctx, trig, reference), **extra}

