"""The evasion family: attacks × budgets, the worst-case ensemble, the per-point worst case, the
validity checks and the evasion verdict (the spec's top-level ``attacks``, ``ensemble``, ``adapt``
and ``verdicts.evasion``)."""

from __future__ import annotations

import dataclasses
import time

import torch

from advkit import registry
from advkit.audit import evasion_report, evasion_shards
from advkit.audit.capabilities import check_subject
from advkit.audit.families.base import AuditContext, Family, family
from advkit.audit.plan import Scenario, make_plan, norm_label
from advkit.audit.report import Finding, Report, ScenarioResult
from advkit.audit.tabular_report import add_tabular_section, feature_changes
from advkit.evaluation.metrics import attack_success_rate, proportion
from advkit.targets.base import Target
from advkit.threat_tags import WHITE_BOX_EVASION
from advkit.threats import LpBall

N_EXAMPLES = 8


def _generator(seed: int, sid: str) -> torch.Generator:
    return AuditContext.generator_for(seed, sid)


# small extra outputs of attacks worth keeping in the report (images, query traces)
_KEEP_EXTRA = ("perturbation", "patch", "fooling_rate", "success_by_query",
               "median_norm_by_query", "budget_exhausted")


def _plain_extra(extra: dict) -> dict:
    """The kept extras as JSON-able values (a non-finite number, such as the median norm while
    fewer than half the points have an adversarial point, becomes None)."""
    out = {}
    for k in _KEEP_EXTRA:
        v = extra.get(k)
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[k] = ([None if not torch.isfinite(t) else t.item() for t in v.flatten()]
                      if v.is_floating_point() and not bool(torch.isfinite(v).all())
                      else v.tolist())
        elif v is not None:
            out[k] = v
    return out


def _ensemble_record(sc: Scenario, target: Target, x, y, seed: int) -> dict:
    from advkit.evaluation.ensemble import run_ensemble

    res = run_ensemble(
        target,
        x,
        y,
        eps=sc.eps,
        norm=sc.norm.lower(),
        attacks=sc.params["attacks"],
        version=sc.params["version"],
        generator=_generator(seed, sc.id),
    )
    summary = res.summary()
    conf = torch.softmax(target.predict_scores(res.x_adv, check=False), 1).max(1)
    return {
        "robust": res.robust.tolist(),
        "adv_pred": conf.indices.tolist(),
        "adv_conf": conf.values.tolist(),
        "broken_by": res.broken_by.tolist(),
        "stages": summary["stages"],
        "x_adv": res.x_adv,
        "queries": sum(st.queries for st in res.stages),
        "passes": sum(st.passes for st in res.stages),
        "distance": LpBall(norm=sc.norm.lower(), eps=0).distance(res.x_adv, x).tolist(),
    }


def run_scenario(sc: Scenario, target: Target, x, y, clean_pred, *, seed: int) -> dict:
    """Run one scenario; return its JSON-able record (metrics plus per-sample arrays)."""
    t0 = time.perf_counter()
    rec: dict = {
        "id": sc.id,
        "kind": sc.kind,
        "attack": sc.attack,
        "label": sc.label or sc.attack,
        "norm": sc.norm,
        "eps": sc.eps,
        "params": sc.attack_params(),
    }
    if sc.kind == "ensemble":
        rec.update(_ensemble_record(sc, target, x, y, seed))
    elif sc.eps == 0:  # no budget: the adversarial point is the input itself
        conf = torch.softmax(target.predict_scores(x, check=False), 1).max(1).values
        rec.update(
            adv_pred=clean_pred.tolist(),
            adv_conf=conf.tolist(),
            x_adv=x,
            queries=0,
            passes=0,
            distance=[0.0] * x.shape[0],
        )
    else:
        attack = registry.create(sc.attack, **sc.attack_params())
        res = attack.attack(target, x, y, generator=_generator(seed, sc.id))
        rec.update(
            adv_pred=res.adv_pred.tolist(),
            adv_conf=res.adv_confidence.tolist(),
            x_adv=res.x_adv,
            queries=res.queries,
            passes=res.passes,
            distance=res.distance.tolist(),
            success=res.success.tolist(),
            minimum_norm=attack.minimum_norm,
            distance_norm=norm_label(res.norm),
            extra=_plain_extra(res.extra),
        )
    if "robust" not in rec:
        adv = torch.tensor(rec["adv_pred"])
        rec["robust"] = ((clean_pred == y) & (adv == y)).tolist()
    x_adv = rec.pop("x_adv")
    changes = feature_changes(target, x, x_adv)
    if changes is not None:
        rec["feature_changes"] = changes
    rec["examples_x_adv"] = x_adv[:N_EXAMPLES].reshape(min(N_EXAMPLES, x.shape[0]), -1).tolist()
    rec["seconds"] = time.perf_counter() - t0
    return rec


def to_scenario_result(rec: dict, clean_pred: torch.Tensor, y: torch.Tensor) -> ScenarioResult:
    robust = torch.tensor(rec["robust"], dtype=torch.bool)
    adv_pred = torch.tensor(rec["adv_pred"])
    dist = torch.tensor(rec["distance"])
    fooled = (adv_pred != y) & (clean_pred == y)
    metrics = {
        "eps": rec["eps"],
        "clean_accuracy": proportion(clean_pred == y),
        "robust_accuracy": proportion(robust),
        "attack_success_rate": attack_success_rate(clean_pred, adv_pred, y),
        # median norm of the successful perturbations (what minimum-norm attacks are judged by)
        "median_distance": float(dist[fooled].median()) if fooled.any() else None,
        "queries": rec["queries"],
        "passes": rec["passes"],
    }
    keep = (
        "robust",
        "adv_pred",
        "adv_conf",
        "distance",
        "examples_x_adv",
        "stages",
        "broken_by",
        "extra",
        "minimum_norm",
        "distance_norm",
        "feature_changes",
    )
    params = {**rec["params"], "norm": rec["norm"]}
    return ScenarioResult(
        id=rec["id"],
        kind="ensemble" if rec["kind"] == "ensemble" else "evasion",
        attack=rec.get("label") or rec["attack"],
        params=params,
        seconds=rec["seconds"],
        metrics=metrics,
        per_sample={k: rec[k] for k in keep if k in rec},
        from_store=bool(rec.get("from_store")),
    )



CHECKS = "evasion/validity-checks"


def _checks_record(sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
    """The validity checks over the attack records ``deps`` (advkit.evaluation.checks)."""
    t0 = time.perf_counter()
    scenarios = [to_scenario_result(deps[d], ctx.clean_pred, ctx.y) for d in sc.deps]
    view = Report(manifest={}, model={}, dataset={}, scenarios=scenarios)
    target = ctx.subject.target
    findings = evasion_report.evasion_checks(view, x=ctx.x, y=ctx.y, target=target,
                                             generator=ctx.generator("checks"))
    return {"id": sc.id, "kind": "checks", "findings": [dataclasses.asdict(f) for f in findings],
            "clean_conf": evasion_report.example_confidences(target, ctx.x, N_EXAMPLES),
            "seconds": time.perf_counter() - t0}


@family
class EvasionFamily(Family):
    """Evasion attacks on the audited target (AML.T0015 / AML.T0043)."""

    name = "evasion"
    gpu = True  # gradient attacks and training
    order = 20
    threat = WHITE_BOX_EVASION

    def active(self, spec) -> bool:
        return bool(spec.attacks) or spec.ensemble is not None

    def plan(self, spec) -> list[Scenario]:
        return make_plan(spec)

    def prepare(self, plan, ctx: AuditContext) -> list[Scenario]:
        # the plan against what the target answers (advkit.audit.capabilities)
        ctx.state["capability_plan"] = check_subject(ctx.spec, ctx.subject)
        stages = ctx.state["capability_plan"].plan
        # the validity checks are a stage of their own, after every attack: stored, so a
        # resumed audit does not run them again, and the report queries no model; with
        # evaluation.shards, a shard-safe attack's points split into stages (evasion_shards)
        return evasion_shards.expand(stages, ctx) + [
            Scenario(CHECKS, "checks", "none", None, {}, kind="checks",
                     deps=tuple(sc.id for sc in stages))]

    def key_inputs(self, sc: Scenario, ctx: AuditContext) -> dict:
        return evasion_shards.key_inputs(sc, ctx)

    def run(self, sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
        if sc.kind == "checks":
            return _checks_record(sc, ctx, deps)
        if sc.kind == evasion_shards.SHARD_KIND:
            return evasion_shards.run_shard(sc, ctx, run_scenario)
        if sc.deps:  # the merge of a sharded attack
            return evasion_shards.merge(sc, deps, N_EXAMPLES)
        return run_scenario(sc, ctx.subject.target, ctx.x, ctx.y, ctx.clean_pred, seed=ctx.seed)

    def results(self, records, ctx: AuditContext) -> list[ScenarioResult]:
        return [to_scenario_result(r, ctx.clean_pred, ctx.y) for r in records
                if r["kind"] not in ("checks", evasion_shards.SHARD_KIND)]

    def report(self, report: Report, records, ctx: AuditContext) -> None:
        from advkit.audit.spec import requested_budgets

        spec = ctx.spec
        rec = next(r for r in records if r["kind"] == "checks")
        evasion_report.add_evasion_sections(
            report, x=ctx.x, y=ctx.y, clean_pred=ctx.clean_pred, target=ctx.subject.target,
            info=ctx.subject.dataset.info, rules=spec.verdicts.evasion,
            extra_eps=requested_budgets(spec),
            findings=[Finding(**f) for f in rec["findings"]], clean_conf=rec["clean_conf"])
        for r in records:  # an attack that ran out of its query budget: a lower bound, said so
            if r["kind"] == evasion_shards.SHARD_KIND:
                continue
            why = (r.get("extra") or {}).get("budget_exhausted")
            if why:
                report.findings.append(Finding(
                    check="query_budget_exhausted", severity="warning", metric="queries",
                    value=float(r["queries"]), threshold=None, scenario=r["id"],
                    why=f"{r['id']} stopped early: {why}; its result is the best found within "
                        "the budget, so its success rate is a lower bound",
                    fix="raise the target's query budget or lower the attack's queries"))
        add_tabular_section(report)
        plan = ctx.state.get("capability_plan")
        if plan is not None:
            plan.add_to(report)
