"""The extraction family: steal the audited model through its query interface (AML.T0024.002).

Each attack of the section is run against the audited target (queries only, through
``advkit.attacks.privacy.extraction_equations.as_oracle``) and the stolen model is scored by
``advkit.evaluation.fidelity``: fidelity (agreement with the victim) on the evaluated test points
and on points uniform in the input bounds, the stolen model's test accuracy beside the victim's,
and the queries spent. Attacks, each where it applies to the target:

- ``copycat``: learning-based stealing from labels (Copycat, Correia-Silva et al. 2018, IJCNN;
  ``strategy: adaptive`` is Knockoff Nets, Orekondy et al. 2019, CVPR), at each budget of
  ``queries`` (the fidelity-versus-queries curve). Any target: it needs labels only. The
  substitute defaults to the audited recipe's architecture (else an MLP); the ``natural`` and
  ``adaptive`` strategies draw their queries from the training split's inputs (the attacker holds
  unlabelled in-distribution data).
- ``equations``: equation solving (Tramèr et al. 2016, USENIX Security, §4.1): a scikit-learn
  logistic regression (binary: exact in d+1 queries), or a zoo ``mlp`` recipe (its architecture
  known, fitted by loss minimisation). Needs probabilities.
- ``tree``: path finding (Tramèr et al. 2016, §4.2) of a scikit-learn decision tree, from its
  leaf distributions. Needs probabilities.

An attack that cannot apply to the target is a spec error naming the attacks that can (before
any data is loaded when the model is a recipe, else once the model is loaded). Example::

    extraction:
      attacks:
        - {name: copycat, queries: [100, 300, 1000], params: {strategy: natural, epochs: 30}}
        - {name: equations}
      n_uniform: 1000

Stages (stable ids): ``extraction/LABEL/queries=Q`` per copycat budget, ``extraction/LABEL``
for the others (``label`` defaults to the name).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from pydantic import Field, field_validator, model_validator

from advkit.audit.families.base import AuditContext, Family, family, validate_section
from advkit.audit.plan import Scenario
from advkit.audit.spec_sections import Entry, _Strict, require_distinct
from advkit.errors import AdvkitError, AuditSpecError, short
from advkit.threat_tags import tag

ATTACKS = ("copycat", "equations", "tree")
FITS = {"network": ("copycat",), "mlp": ("copycat", "equations"),
        "logistic": ("copycat", "equations"), "tree": ("copycat", "tree"),
        "other": ("copycat",)}


class ExtractionAttackSpec(Entry):
    queries: list[int] | None = None  # copycat's budgets

    @field_validator("queries")
    @classmethod
    def _queries(cls, v):
        if v is not None and (not v or any(q < 1 for q in v)):
            raise ValueError("queries needs at least one positive query budget, e.g. [100, 1000]")
        return None if v is None else sorted(set(v))


class ExtractionSpec(_Strict):
    attacks: list[ExtractionAttackSpec] = Field(min_length=1)
    n_uniform: int = Field(default=1000, ge=1, le=1_000_000)  # uniform points for fidelity

    @model_validator(mode="after")
    def _distinct(self):
        require_distinct([a.key for a in self.attacks], "attacks")
        return self


def _cls(name: str):
    from advkit.attacks.privacy.copycat import Copycat
    from advkit.attacks.privacy.extraction_equations import EquationSolving
    from advkit.attacks.privacy.extraction_tree import TreePathFinding

    return {"copycat": Copycat, "equations": EquationSolving, "tree": TreePathFinding}[name]


def _recipe_kind(spec) -> str | None:
    """What the target is when the model is a recipe (None: known once loaded)."""
    if spec.model.zoo is None:
        return None
    return "mlp" if spec.model.zoo == "mlp" else "network"


def target_kind(target) -> str:
    """``logistic``, ``tree``, ``network`` or ``other`` for a loaded target."""
    from advkit.targets.features import FeatureSpaceTarget
    from advkit.targets.sklearn import SklearnTarget
    from advkit.targets.torch import TorchTarget

    inner = target.inner if isinstance(target, FeatureSpaceTarget) else target
    if isinstance(inner, SklearnTarget):
        est = inner.estimator
        est = est.steps[-1][1] if hasattr(est, "steps") else est
        kind = type(est).__name__
        if kind == "LogisticRegression":
            return "logistic"
        if kind == "DecisionTreeClassifier":
            return "tree"
        return "other"
    return "network" if isinstance(inner, TorchTarget) else "other"


def attack_params(a: ExtractionAttackSpec, spec, budget: int | None) -> dict:
    """The attack's constructor parameters: the spec's, with the defaults the audit fills from
    the model recipe (the substitute's or the known architecture)."""
    p = dict(a.params)
    m = spec.model
    if a.name == "copycat":
        if "architecture" not in p:
            p["architecture"] = m.zoo or "mlp"
            if p["architecture"] == "mlp" and "hidden" not in p and m.kwargs.get("hidden"):
                p["hidden"] = list(m.kwargs["hidden"])
        p["queries"] = budget
    elif a.name == "equations" and m.zoo == "mlp" and "architecture" not in p:
        p["architecture"] = "mlp"
        if "hidden" not in p and m.kwargs.get("hidden"):
            p["hidden"] = list(m.kwargs["hidden"])
    return p


def _refuse(what: str, kind: str, shown: str | None = None) -> AuditSpecError:
    return AuditSpecError(
        f"extraction: {what} cannot apply to this target ({shown or kind}): equation solving "
        "steals a "
        "logistic regression or a known MLP, path finding a decision tree, Copycat any model; "
        f"attacks for it: {', '.join(FITS[kind])}")


def check_query_pool(section: str, sid: str, params: dict, queries: int, pool: int) -> None:
    """Copycat's natural and adaptive strategies draw their queries from the ``pool`` training
    inputs: a budget above it is an AuditSpecError naming both ways out."""
    strategy = params.get("strategy", "random")
    if strategy != "random" and queries > pool:
        raise AuditSpecError(
            f"{section}: {sid}: the {strategy} strategy draws its queries from the {pool} "
            f"training inputs; lower the queries to at most {pool} or use strategy random")


@family
class ExtractionFamily(Family):
    """Model extraction (AML.T0024.002 Extract ML Model)."""

    name = "extraction"
    gpu = True  # gradient attacks and training
    order = 70
    threat = tag("AML.T0024.002", "black box")

    def parse(self, data, *, source: str) -> ExtractionSpec:
        sec = validate_section(ExtractionSpec, data, source=source, module="extraction",
                               expected="'attacks' (and optionally 'n_uniform')")
        for i, a in enumerate(sec.attacks):
            if a.name not in ATTACKS:
                raise AuditSpecError(f"{source}.attacks[{i}].name: unknown extraction attack "
                                     f"{short(a.name)}; extraction attacks: {', '.join(ATTACKS)}")
            if (a.name == "copycat") != (a.queries is not None):
                raise AuditSpecError(
                    f"{source}.attacks[{i}] ({a.key}): " + (
                        "copycat needs 'queries', its budgets, e.g. [100, 300, 1000]"
                        if a.name == "copycat" else f"{a.name} chooses its own queries; "
                        "remove 'queries' (its parameters may cap them)"))
            if "queries" in a.params and a.name == "copycat":
                raise AuditSpecError(f"{source}.attacks[{i}] ({a.key}): the budgets come from "
                                     "'queries'; remove 'queries' from params")
        return sec

    def plan(self, spec) -> list[Scenario]:
        sec: ExtractionSpec = self.section(spec)
        kind = _recipe_kind(spec)
        out = []
        for i, a in enumerate(sec.attacks):
            if kind is not None and a.name not in FITS[kind]:
                raise _refuse(a.name, kind, f"a {spec.model.zoo} network")
            for b in a.queries or [None]:
                p = attack_params(a, spec, b)
                try:
                    _cls(a.name)(**p)
                except AdvkitError as exc:
                    raise AuditSpecError(f"extraction.attacks[{i}] ({a.key}): {exc}") from None
                sid = f"extraction/{a.key}" + (f"/queries={b}" if b is not None else "")
                out.append(Scenario(sid, a.name, "none", None,
                                    {"label": a.key, "attack_params": p, "budget": b,
                                     "n_uniform": sec.n_uniform}, kind="extract",
                                    family=self.name))
        return out

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        kind = target_kind(ctx.subject.target)
        if _recipe_kind(ctx.spec) == "mlp":
            kind = "mlp"
        caps = ctx.subject.target.capabilities
        pool = ctx.subject.dataset.x_train.shape[0]
        for sc in plan:
            if sc.attack not in FITS[kind]:
                raise _refuse(sc.attack, kind)
            if sc.attack != "copycat" and not caps.probabilities:
                raise AuditSpecError(f"extraction: {sc.attack} needs the target's probabilities "
                                     "and it answers labels only; use copycat")
            if sc.attack == "copycat":
                check_query_pool("extraction", sc.id, sc.params["attack_params"],
                                 sc.params["budget"], pool)
        return plan

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        return steal(sc, ctx, ctx.subject.target)

    def results(self, records, ctx: AuditContext):
        from advkit.audit import extraction_report

        return extraction_report.results(records)

    def report(self, report, records, ctx: AuditContext) -> None:
        from advkit.audit import extraction_report

        extraction_report.add_to(report, records)


def steal(sc: Scenario, ctx: AuditContext, target, *, draws: str | None = None) -> dict:
    """Run the extraction stage ``sc`` against ``target`` (the audited one, or a defended one);
    its record: the stolen model scored by fidelity, with the queries spent. ``draws``: the
    stage id whose generator draws the queries (default ``sc.id``; a defended re-run draws the
    undefended stage's, so the two differ by the defense alone)."""
    from advkit.evaluation.fidelity import evaluate_extraction

    t0 = time.perf_counter()
    g = ctx.generator(draws or sc.id)
    attack = _cls(sc.attack)(**sc.params["attack_params"])
    extra: dict[str, Any] = {}
    if sc.attack == "copycat":
        pool = None
        if attack.strategy != "random":
            pool = ctx.target_inputs(ctx.subject.dataset.x_train).to(torch.float32)
        res = attack.steal(target, pool=pool, generator=g)
        stolen, spent = res.model, res.queries
        extra = {"strategy": res.strategy}
    elif sc.attack == "equations":
        res = attack.extract(target, generator=g)
        stolen, spent = res.model, res.queries
        extra = {"method": res.method, "fit_loss": res.loss}
    else:
        res = attack.extract(target, generator=g)
        stolen, spent = res.model, res.queries
        extra = {"leaves": stolen.n_leaves, "complete": res.complete,
                 "duplicate_ids": res.duplicate_ids}
    steal_s = time.perf_counter() - t0
    rep = evaluate_extraction(target, stolen, ctx.x, ctx.y, queries=int(spent),
                              n_uniform=sc.params["n_uniform"],
                              generator=ctx.generator("extraction/uniform"))
    return {"id": sc.id, "kind": sc.kind, "attack": sc.attack, "label": sc.params["label"],
            "budget": sc.params["budget"], "params": sc.params["attack_params"],
            **rep.to_dict(), **extra, "steal_seconds": steal_s,
            "seconds": time.perf_counter() - t0}
