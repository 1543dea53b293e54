"""The stages of the defenses family: planned from the evasion plan, and how each one runs.

Per defense (``KEY``: its label, ``S``: each budgeted scenario, eps > 0, of the evasion plan as
adapted to the target by ``advkit.audit.capabilities``):

- ``defenses/KEY/cost`` (transforms, output hardening): the defended model's clean predictions,
  its inference time beside the undefended model's, and queries per point;
- ``defenses/KEY/train`` (training defenses): the recipe trained with the defense through the
  one cached trainer (``advkit.models.cache``), then its clean predictions;
- ``defenses/KEY/S``: S against the defended model. Input transforms: the adaptive attack, BPDA
  for non-differentiable transforms and EOT for randomized ones (Athalye, Carlini & Wagner 2018,
  ICML; Athalye, Engstrom, Ilyas & Kwok 2018, ICML), and ``defenses/KEY/S/naive`` (autograd
  through the transform, one draw) where the two differ. Output hardening: the undefended
  model's adversarial examples of S judged through the hardened outputs (transfer: hardening
  changes answers, not decisions), and S itself through them when the hardened target still
  serves it, else the score-based attack that replaces it (``adapt``), or none (labels only);
- ``defenses/KEY/certify`` (randomized smoothing): CERTIFY (Cohen, Rosenfeld & Kolter 2019) of
  the audited model as the base classifier.

Each stage draws its randomness from its own id (``AuditContext.generator``).
"""

from __future__ import annotations

import math
import time

import torch

from advkit import registry
from advkit.attacks.support import requires
from advkit.audit.defenses_section import (
    DefenseEntry,
    DefensesSection,
    build,
    entry_dict,
    entry_from,
    training_hook,
    training_tag,
)
from advkit.audit.families.base import AuditContext
from advkit.audit.plan import Scenario
from advkit.errors import AdvkitError, AuditSpecError

FAMILY = "defenses"
DEFAULT_EOT = 10


def _sc_dict(sc: Scenario) -> dict:
    return {"id": sc.id, "attack": sc.attack, "norm": sc.norm, "eps": sc.eps,
            "params": dict(sc.params), "kind": sc.kind, "label": sc.label}


def _sc_from(d: dict, sid: str) -> Scenario:
    """The evasion scenario ``d`` under the stage id ``sid`` (its generator's seed)."""
    return Scenario(sid, d["attack"], d["norm"], d["eps"], dict(d["params"]), kind=d["kind"],
                    label=d["label"])


def _stage(sid, kind, d: DefenseEntry, *, source=None, mode=None, direct=None, change=None,
           deps=(), extra=None) -> Scenario:
    params = {"defense": entry_dict(d), "mode": mode,
              "source": None if source is None else _sc_dict(source),
              "direct": None if direct is None else _sc_dict(direct), "change": change,
              **(extra or {})}
    return Scenario(sid, source.attack if source else d.name, source.norm if source else "none",
                    source.eps if source else None, params, kind=kind, family=FAMILY,
                    deps=tuple(deps))


def needs_gradients(sc: Scenario) -> bool:
    if sc.kind == "ensemble":
        return sc.params.get("version") == "standard" or any(
            "gradients" in requires(a if isinstance(a, str) else a["name"])
            for a in sc.params.get("attacks") or [])
    return "gradients" in requires(sc.attack)


def _naive_differs(d: DefenseEntry, sc: Scenario) -> bool:
    cls = registry.get(d.name).cls
    return (cls.gradient == "bpda" or cls.randomized) and needs_gradients(sc)


def plan_stages(sec: DefensesSection, budgeted: list[Scenario], *, recipe: dict | None,
                direct_for=None) -> list[Scenario]:
    """Every stage of the section against the budgeted evasion scenarios; ``direct_for(d, sc)``:
    (the scenario run through an output hardening, the change made to get it)."""
    out = []
    for d in sec.defenses:
        base = f"defenses/{d.key}"
        if d.kind == "certify":
            extra, deps = None, ()
            if d.base is not None:  # the base classifier a training entry trains
                extra = {"base": entry_dict(sec.entry(d.base))}
                deps = (f"defenses/{d.base}/train",)
            out.append(_stage(f"{base}/certify", "certify", d, extra=extra, deps=deps))
            continue
        training = d.kind == "training"
        first = f"{base}/train" if training else f"{base}/cost"
        out.append(_stage(first, "train" if training else "cost", d,
                          extra={"recipe": recipe} if training else None))
        for sc in budgeted:
            sid = f"{base}/{sc.id}"
            if d.kind == "output":
                direct, change = direct_for(d, sc) if direct_for else (sc, None)
                out.append(_stage(sid, "hardened", d, source=sc, direct=direct, change=change,
                                  deps=(first,)))
                continue
            mode = "adaptive" if d.kind == "transform" else None
            out.append(_stage(sid, "attack", d, source=sc, mode=mode, deps=(first,)))
            if d.kind == "transform" and _naive_differs(d, sc):
                out.append(_stage(f"{sid}/naive", "attack", d, source=sc, mode="naive",
                                  deps=(first,)))
    return out


def budgeted_scenarios(plan: list[Scenario]) -> list[Scenario]:
    return [sc for sc in plan if sc.eps is not None and sc.eps > 0]


def prepare_stages(sec: DefensesSection, ctx: AuditContext, recipe: dict | None) -> list[Scenario]:
    """The stages against the loaded subject: the evasion plan as adapted to the target, each
    output hardening's attacks adapted to what it still answers; AuditSpecError for a defense
    the data or model cannot take, before any stage runs."""
    from advkit.audit.capabilities import check_plan, check_subject
    from advkit.targets.wrapped import HardenedOutputTarget

    cap = ctx.state.get("capability_plan") or check_subject(ctx.spec, ctx.subject)
    _check_data(sec, ctx)
    inner = ctx.subject.target

    def direct_for(d: DefenseEntry, sc: Scenario):
        caps = HardenedOutputTarget(inner, build(d)).capabilities
        res = check_plan([sc], caps, adapt=True, params=ctx.spec.adapt.params,
                         target=f"{inner.model_name} with {d.key}")
        change = None
        if res.changes:
            c = res.changes[0]
            change = {"attack": c.attack, "missing": list(c.missing), "action": c.action,
                      "replacement": c.replacement, "reason": c.reason}
        return (res.plan[0] if res.plan else None), change

    return plan_stages(sec, budgeted_scenarios(cap.plan), recipe=recipe, direct_for=direct_for)


def _check_data(sec: DefensesSection, ctx: AuditContext) -> None:
    info = ctx.subject.dataset.info
    for d in sec.of_kind("transform"):
        try:
            build(d).apply(ctx.x[:2], ctx.subject.target.contract.bounds, None)
        except (AdvkitError, RuntimeError, ValueError) as exc:
            raise AuditSpecError(f"defenses: {d.key}: {d.name} does not apply to the data "
                                 f"{info.name!r} ({exc}); remove it, or audit image data") from None
    if sec.of_kind("training") and getattr(info, "feature_space", None) is not None:
        raise AuditSpecError(f"defenses: {sec.of_kind('training')[0].key}: training defenses on "
                             "tabular data are not supported yet (their adversarial examples "
                             "would ignore the feature constraints); remove it")


# ---------------------------------------------------------------- running one stage

def run_stage(sc: Scenario, ctx: AuditContext, deps: dict[str, dict]) -> dict:
    d = entry_from(sc.params["defense"])
    t0 = time.perf_counter()
    run = {"cost": _cost, "train": _train, "attack": _attack, "hardened": _hardened,
           "certify": _certify}[sc.kind]
    rec = run(sc, ctx, d, deps)
    rec.setdefault("seconds", time.perf_counter() - t0)
    rec.update(id=sc.id, stage=sc.kind, defense=d.key, name=d.name, defense_kind=d.kind)
    return rec


def _defended(d: DefenseEntry, ctx: AuditContext, sid: str, mode: str | None = None):
    from advkit.targets.wrapped import HardenedOutputTarget, TransformedTarget

    inner = ctx.subject.target
    if d.kind == "transform":
        return TransformedTarget(inner, (build(d),), mode=mode or "adaptive",
                                 eot_samples=d.eot_samples or DEFAULT_EOT,
                                 generator=ctx.generator(f"{sid}#draws"),
                                 batch_size=inner.batch_size)
    if d.kind == "output":
        return HardenedOutputTarget(inner, build(d))
    return _trained_target(d, ctx)[0]


def _cost(sc, ctx, d, deps) -> dict:
    inner, x = ctx.subject.target, ctx.x
    with torch.no_grad():
        t0 = time.perf_counter()
        inner.labels(x, check=False)
        t_base = time.perf_counter() - t0
        target = _defended(d, ctx, sc.id)
        q0, t1 = target.queries, time.perf_counter()
        pred = target.labels(x, check=False)
        t_def = time.perf_counter() - t1
    return {"clean_pred": pred.cpu().tolist(), "n": ctx.n, "undefended_seconds": t_base,
            "defended_seconds": t_def, "queries_per_point": (target.queries - q0) / ctx.n}


def _trained_target(d: DefenseEntry, ctx: AuditContext):
    """(target, facts) of the recipe trained with the training defense ``d`` (kept in
    ``ctx.state`` for this run; read from the model cache, or trained again identically)."""
    from advkit.models.cache import trained_zoo_model
    from advkit.models.io import target_for
    from advkit.targets.features import FeatureSpaceTarget

    held = ctx.state.setdefault("defenses_models", {})
    if d.key not in held:
        spec, ds = ctx.spec, ctx.subject.dataset
        ms = spec.model if d.epochs is None else spec.model.model_copy(update={"epochs": d.epochs})
        hook, desc = training_hook(d, ds.info.bounds, ctx.generator(f"defenses/{d.key}/train"))
        model, info = trained_zoo_model(ds, ms, seed=spec.seed, batch_hook=hook,
                                        tag=training_tag(desc))
        target = target_for(model, ds, batch_size=spec.evaluation.batch_size)
        if ds.info.feature_space is not None:
            target = FeatureSpaceTarget(target)
        held[d.key] = (target, {**info, "training": desc, "model": model})
    return held[d.key]


def _train(sc, ctx, d, deps) -> dict:
    from advkit.audit.manifest import sha256_state_dict

    target, facts = _trained_target(d, ctx)
    with torch.no_grad():
        pred = target.labels(ctx.x, check=False)
    return {"clean_pred": pred.cpu().tolist(), "n": ctx.n,
            "train_seconds": facts.get("train_seconds"), "trained_now": facts["trained_now"],
            "cache": facts["cache"], "recipe": facts["recipe"], "training": facts["training"],
            "sha256": sha256_state_dict(facts["model"].state_dict())}


def _clean(ctx: AuditContext, deps: dict, sc: Scenario) -> torch.Tensor:
    return torch.tensor(deps[sc.deps[0]]["clean_pred"]).to(ctx.y.device)


def _attack(sc, ctx, d, deps) -> dict:
    from advkit.audit.families.evasion import run_scenario

    mode = sc.params["mode"]
    target = _defended(d, ctx, sc.id, mode)
    src = _sc_from(sc.params["source"], sc.id)
    rec = run_scenario(src, target, ctx.x, ctx.y, _clean(ctx, deps, sc), seed=ctx.seed)
    rec.update(source=sc.params["source"]["id"], mode=mode)
    if d.kind == "transform":
        rec["gradients"] = target.describe()
    return rec


def _craft(sc: Scenario, target, x, y, generator) -> tuple[torch.Tensor, int]:
    """The adversarial examples of ``sc`` on ``target`` and the queries spent."""
    if sc.kind == "ensemble":
        from advkit.evaluation.ensemble import run_ensemble

        res = run_ensemble(target, x, y, eps=sc.eps, norm=sc.norm.lower(),
                           attacks=sc.params["attacks"], version=sc.params["version"],
                           generator=generator)
        return res.x_adv, sum(st.queries for st in res.stages)
    res = registry.create(sc.attack, **sc.attack_params()).attack(target, x, y,
                                                                  generator=generator)
    return res.x_adv, res.queries


def _hardened(sc, ctx, d, deps) -> dict:
    from advkit.audit.families.evasion import run_scenario
    from advkit.threats import LpBall

    hard = _defended(d, ctx, sc.id)
    x, y = ctx.x, ctx.y
    clean = _clean(ctx, deps, sc)
    correct = clean == y
    src = _sc_from(sc.params["source"], f"{sc.id}#transfer")
    x_adv, q_copy = _craft(src, ctx.subject.target, x, y, ctx.generator(src.id))
    with torch.no_grad():
        t_pred = hard.labels(x_adv, check=False).to(y.device)
    t_robust = correct & (t_pred == y)
    transfer = {"attack": src.label or src.attack, "robust": t_robust.tolist(),
                "queries_on_copy": q_copy}
    direct = sc.params["direct"]
    if direct is None:
        rec = {"id": sc.id, "kind": "attack", "attack": src.attack, "norm": src.norm,
               "eps": src.eps, "params": src.attack_params(), "adv_pred": t_pred.tolist(),
               "queries": 0, "passes": 0, "label": f"transfer of {transfer['attack']}",
               "distance": LpBall(norm=src.norm.lower(), eps=0).distance(x_adv, x).tolist()}
        robust, direct_robust = t_robust, None
    else:
        rec = run_scenario(_sc_from(direct, sc.id), hard, x, y, clean, seed=ctx.seed)
        direct_robust = torch.tensor(rec["robust"], dtype=torch.bool).to(y.device)
        robust = direct_robust & t_robust
        broke = correct & ~t_robust  # shown with the transfer's prediction where it broke it
        rec["adv_pred"] = torch.where(broke, t_pred, torch.tensor(rec["adv_pred"]).to(y.device)
                                      ).tolist()
        rec["label"] = f"{rec['label']} + transfer of {transfer['attack']}"
        direct_robust = direct_robust.tolist()
    rec.update(robust=robust.tolist(), transfer=transfer, direct_robust=direct_robust,
               source=sc.params["source"]["id"], mode=None, change=sc.params["change"])
    return rec


def _certify(sc, ctx, d, deps) -> dict:
    rs = build(d)
    k = min(d.points or ctx.n, ctx.n)
    base = sc.params.get("base")
    target = ctx.subject.target if base is None else _trained_target(entry_from(base), ctx)[0]
    cert = rs.certify(target, ctx.x[:k], generator=ctx.generator(sc.id))
    return {"prediction": cert.prediction.tolist(), "radius": cert.radius.tolist(),
            "pA_lower": cert.pA_lower.tolist(), "queries": cert.queries, "seconds": cert.seconds,
            "sigma": rs.sigma, "n0": rs.n0, "n_samples": rs.n, "alpha": rs.alpha,
            "max_radius": rs.max_radius(), "points": k, "base": d.base,
            "input_dim": math.prod(ctx.x.shape[1:])}
