"""The defenses family's results, report section, findings and verdict, from stored records only.

The figure per defense is the per-point worst case over the attacks run against it at each budget
(DESIGN §4; adaptive attacks for input transforms; for output hardening, the attacks through the
hardened outputs together with the undefended model's adversarial examples; for randomized
smoothing, the certified accuracy at the L2 radius that covers the budget's ball: eps in L2 and
L1, eps·sqrt(d) in L∞). Each defense is judged by the evasion rule (``advkit.audit.verdicts``)
against its own clean accuracy; the family is "robust" when at least one defense is.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from advkit import registry
from advkit.audit.report import Finding, Plot, Report, ScenarioResult, Series, Verdict
from advkit.audit.verdicts import STATUS_TEXT, evasion_verdict
from advkit.defenses.certify.smoothing import radii_grid
from advkit.evaluation.metrics import Proportion, proportion

MAX_DROP = 0.05  # a defense costing more clean accuracy than this gets a warning
_ORDER = {"vulnerable": 0, "inconclusive": 1, "not assessed": 2, "robust": 3}


def _correct(rec: dict, y: torch.Tensor) -> torch.Tensor:
    return torch.tensor(rec["clean_pred"]) == y


def _budget(r: dict) -> tuple[str, float]:
    return r["norm"], float(r["eps"])


def _bt(budget) -> str:
    return f"{budget[0]} eps={budget[1]:g}"


def results(records: list[dict], ctx) -> list[ScenarioResult]:
    from advkit.audit.families.evasion import to_scenario_result

    y = ctx.y.cpu()
    clean = {r["defense"]: torch.tensor(r["clean_pred"]) for r in records
             if r["stage"] in ("cost", "train")}
    out = []
    for r in records:
        st, key = r["stage"], r["defense"]
        if st in ("cost", "train"):
            metrics = {"clean_accuracy": proportion(_correct(r, y)),
                       "undefended_clean_accuracy": proportion(ctx.clean_pred.cpu() == y)}
            if st == "cost":
                metrics.update(seconds_per_point=r["defended_seconds"] / r["n"],
                               queries_per_point=r["queries_per_point"])
            else:
                metrics["train_seconds"] = r["train_seconds"]
            out.append(ScenarioResult(id=r["id"], kind=f"defense_{st}", attack="none",
                                      params={"defense": r["name"]}, metrics=metrics,
                                      seconds=r["seconds"], defense=key,
                                      from_store=bool(r.get("from_store"))))
        elif st in ("attack", "hardened"):
            s = to_scenario_result(r, clean[key], y)
            per = {k: v for k, v in s.per_sample.items() if k != "extra"}
            out.append(dataclasses.replace(
                s, kind="defended_evasion", defense=key, per_sample=per,
                params={**s.params, "mode": r.get("mode"), "source": r["source"]}))
        elif st == "certify":
            pred = torch.tensor(r["prediction"])
            yk = y[:r["points"]]
            out.append(ScenarioResult(
                id=r["id"], kind="certification", attack="certify", defense=key,
                params={"sigma": r["sigma"], "n0": r["n0"], "n": r["n_samples"],
                        "alpha": r["alpha"]},
                metrics={"certified_accuracy_r0": _certified(r, yk, 0.0),
                         "abstain_rate": proportion(pred == -1), "queries": r["queries"]},
                seconds=r["seconds"], per_sample={"prediction": r["prediction"],
                                                  "radius": r["radius"]},
                from_store=bool(r.get("from_store"))))
    return out


def _certified(r: dict, y: torch.Tensor, radius: float) -> Proportion:
    pred, rad = torch.tensor(r["prediction"]), torch.tensor(r["radius"], dtype=torch.float64)
    return proportion((pred == y) & (pred != -1) & (rad >= radius))


def l2_radius(norm: str, eps: float, dim: int) -> float | None:
    """The L2 radius whose ball contains the ``norm`` ball of radius ``eps`` in ``dim`` inputs."""
    return {"L2": eps, "L1": eps, "Linf": eps * math.sqrt(dim)}.get(norm)


# ---------------------------------------------------------------- per defense

@dataclasses.dataclass
class _Defense:
    key: str
    name: str
    kind: str
    clean: Proportion
    base: Proportion  # the undefended model's clean accuracy on the same points
    robust: dict = dataclasses.field(default_factory=dict)  # budget -> Proportion (worst case)
    naive: dict = dataclasses.field(default_factory=dict)  # transforms: budget -> Proportion
    masks: dict = dataclasses.field(default_factory=dict)  # budget -> robust flags
    naive_masks: dict = dataclasses.field(default_factory=dict)
    ids: dict = dataclasses.field(default_factory=dict)  # budget -> stage ids
    records: list = dataclasses.field(default_factory=list)
    cost: dict = dataclasses.field(default_factory=dict)
    curve: list = dataclasses.field(default_factory=list)  # certify: (L2 radius, certified acc)
    status: str = "not assessed"
    judged: dict | None = None


def _and(masks: dict, budget, flags) -> None:
    f = torch.tensor(flags, dtype=torch.bool)
    masks[budget] = f if budget not in masks else masks[budget] & f


def _defenses(records: list[dict], ctx) -> list[_Defense]:
    y = ctx.y.cpu()
    out: dict[str, _Defense] = {}
    for r in records:
        key = r["defense"]
        if r["stage"] in ("cost", "train", "certify") and key not in out:
            k = r["points"] if r["stage"] == "certify" else ctx.n
            clean = (_certified(r, y[:k], 0.0) if r["stage"] == "certify"
                     else proportion(_correct(r, y)))
            base = proportion(ctx.clean_pred.cpu()[:k] == y[:k])
            out[key] = _Defense(key, r["name"], r["defense_kind"], clean, base)
        d = out[key]
        d.records.append(r)
        if r["stage"] == "cost":
            d.cost = {"seconds_per_point": r["defended_seconds"] / r["n"],
                      "times_undefended": r["defended_seconds"] / max(r["undefended_seconds"],
                                                                      1e-12),
                      "queries_per_point": r["queries_per_point"]}
        elif r["stage"] == "train":
            d.cost = {"train_seconds": r["train_seconds"]}
        elif r["stage"] == "certify":
            d.cost = {"seconds_per_point": r["seconds"] / r["points"],
                      "queries_per_point": r["queries"] / r["points"]}
            yk = y[:r["points"]]
            for budget in _plan_budgets(ctx):
                rad = l2_radius(budget[0], budget[1], r["input_dim"])
                if rad is not None:
                    d.robust[budget] = _certified(r, yk, rad)
            d.curve = [(rad, _certified(r, yk, rad)) for rad in radii_grid(r["max_radius"], 20)]
        elif r.get("mode") == "naive":
            _and(d.naive_masks, _budget(r), r["robust"])
        else:
            _and(d.masks, _budget(r), r["robust"])
            d.ids.setdefault(_budget(r), []).append(r["id"])
    for d in out.values():
        d.robust.update({b: proportion(m) for b, m in d.masks.items()})
        d.naive = {b: proportion(m) for b, m in d.naive_masks.items()}
    return list(out.values())


def _plan_budgets(ctx) -> list[tuple[str, float]]:
    from advkit.audit.plan import make_plan, plan_budgets

    b = plan_budgets(make_plan(ctx.spec)).eps
    return sorted((n, e) for n, es in b.items() for e in es if e > 0)


def _undefended(report: Report, records: list[dict], ctx) -> dict:
    """The undefended model's worst case over the same evasion scenarios, per budget."""
    sources = {r["source"] for r in records if r.get("source")}
    masks: dict = {}
    for s in report.scenarios:
        if s.kind in ("evasion", "ensemble") and s.id in sources and "robust" in s.per_sample:
            _and(masks, (s.params["norm"], float(s.metrics["eps"])), s.per_sample["robust"])
    return {b: proportion(m) for b, m in masks.items()}


def _judge(d: _Defense, rules, findings: list[Finding]) -> list[ScenarioResult]:
    """The defense's worst-case points (as report scenarios) and its status by the evasion rule."""
    points = [ScenarioResult(
        id=f"defenses/{d.key}/worst-case/{b[0]}/eps={b[1]:g}", kind="defense_worst_case",
        attack="worst case", params={"norm": b[0], "attacks": d.ids.get(b, []), "defense": d.name},
        metrics={"eps": b[1], "clean_accuracy": d.clean, "robust_accuracy": p}, seconds=0.0,
        defense=d.key) for b, p in sorted(d.robust.items())]
    v = evasion_verdict(points, [], rules)
    d.status = v.status
    d.judged = next((f for f in v.figures if f["judged"]), None)
    # as the evasion rule does with failed critical checks: a defense that masks gradients, or
    # whose adaptive attack did worse than the naive one, may be weaker than its figure says
    weak = any(not f.passed and not f.skipped and f.scenario
               and f.scenario.startswith(f"defenses/{d.key}/")
               and (f.severity == "critical" or f.check == "adaptive_attack_weaker_than_naive")
               for f in findings)
    if d.status == "robust" and weak:
        d.status = "inconclusive"
    return points


# ---------------------------------------------------------------- findings

def _tag(name: str):
    return registry.get(name).threat


def _gap_finding(d: _Defense) -> Finding | None:
    """Naive minus adaptive robust accuracy on the same points, with one point of slack
    (Athalye, Carlini & Wagner 2018; the rule of ``advkit.evaluation.checks``)."""
    gaps = [(d.naive[b].k - d.robust[b].k, b) for b in d.naive if b in d.robust]
    if not gaps:
        return None
    hi, lo = max(gaps), min(gaps)
    n = d.clean.n
    adaptive = next(r for r in d.records if r.get("gradients") and r.get("mode") == "adaptive")
    g = adaptive["gradients"]
    how = f"BPDA for {', '.join(g['bpda'])}" if g["bpda"] else "exact gradients"
    how += f", EOT over {g['eot_samples']} draws" if g["eot_samples"] > 1 else ""
    sid = f"defenses/{d.key}/worst-case/{hi[1][0]}/eps={hi[1][1]:g}"
    common = dict(metric="robust accuracy, naive minus adaptive", threat="defenses",
                  threat_tag=_tag(d.name))
    if hi[0] > 1:
        b = hi[1]
        return Finding(
            check="defense_holds_only_against_naive_attack", severity="critical",
            value=hi[0] / n, threshold=1.0 / n, scenario=sid, **common,
            why=(f"{d.key} keeps robust accuracy {d.naive[b].value:.3f} at {_bt(b)} against the "
                 f"naive attacks but only {d.robust[b].value:.3f} against adaptive ones ({how}): "
                 "its apparent robustness is gradient masking (Athalye, Carlini & Wagner 2018)"),
            fix="do not rely on this transform; judge defenses by adaptive attacks, and use "
                "adversarial training or a certified defense")
    if lo[0] < -1:
        b = lo[1]
        return Finding(
            check="adaptive_attack_weaker_than_naive", severity="warning", value=lo[0] / n,
            threshold=-1.0 / n, scenario=f"defenses/{d.key}/worst-case/{b[0]}/eps={b[1]:g}",
            **common, why=f"on {d.key} at {_bt(b)} the adaptive attack ({how}) did worse than the "
                          "naive one: the adaptive evaluation may be misconfigured or too short",
            fix="raise the attacks' steps or restarts, or the defense's eot_samples, and rerun")
    return Finding(check="defense_holds_only_against_naive_attack", severity="info",
                   value=hi[0] / n, threshold=1.0 / n, scenario=sid, passed=True, **common,
                   why=f"{d.key}: the naive and adaptive ({how}) attacks agree within one point",
                   fix="")


def _hardening_finding(d: _Defense) -> Finding:
    worst = None
    for r in d.records:
        if r["stage"] != "hardened":
            continue
        t = proportion(torch.tensor(r["transfer"]["robust"]))
        direct = (proportion(torch.tensor(r["direct_robust"]))
                  if r["direct_robust"] is not None else None)
        gap = (direct.k - t.k) if direct is not None else None
        if worst is None or (gap or 0) > (worst[0] or 0):
            worst = (gap, r, t, direct)
    common = dict(check="output_hardening_hides_scores_only", metric="robust accuracy, "
                  "through the outputs minus transferred", threat="defenses",
                  threat_tag=_tag(d.name), fix="treat output hardening as a cost for "
                  "score-based attackers, not as robustness; defend the decision itself "
                  "(adversarial training, certification)")
    if worst is None:
        return Finding(severity="info", value=None, threshold=None, skipped=True,
                       why=f"{d.key}: no budgeted attack ran", **{**common, "fix": ""})
    gap, r, t, direct = worst
    n = d.clean.n
    if direct is None:
        return Finding(severity="warning", value=None, threshold=None, scenario=r["id"],
                       why=f"{d.key} answers labels only: no registered budgeted attack runs "
                           "through it (the decision-based ones, hopskipjump, boundary and sign-opt, are "
                           "minimum-norm and are not run here); the undefended "
                           f"model's adversarial examples still leave only {t.value:.3f} robust",
                       **common)
    fired = gap > 1
    return Finding(severity="warning" if fired else "info", value=gap / n, threshold=1.0 / n,
                   scenario=r["id"], passed=not fired, **common,
                   why=(f"through {d.key}, {r['label'].split(' + ')[0]} leaves {direct.value:.3f} "
                        f"robust at {_bt(_budget(r))}, but the undefended model's adversarial "
                        f"examples leave {t.value:.3f}: hardening changes the answers, not the "
                        "decisions" if fired else
                        f"{d.key}: attacks through the hardened outputs and transferred examples "
                        "agree within one point"))


def _cost_finding(d: _Defense) -> Finding:
    base = d.base
    drop = base.value - d.clean.value
    fired = drop > MAX_DROP
    what = ("certified accuracy at radius 0 of the smoothed model" if d.kind == "certify" else
            "clean accuracy")
    return Finding(check="defense_cost", severity="warning" if fired else "info",
                   metric="clean accuracy drop", value=drop, threshold=MAX_DROP,
                   passed=not fired, threat="defenses", threat_tag=_tag(d.name),
                   scenario=f"defenses/{d.key}",
                   why=f"{d.key} changes the {what} from {base.value:.3f} to {d.clean.value:.3f}",
                   fix="tune the defense's strength, or accept the cost knowingly" if fired
                   else "")


def _curve_finding(d: _Defense) -> Finding:
    """A certificate at radius r holds at every smaller radius, so certified accuracy cannot
    rise with the radius: a curve that rises means the certificates are computed wrongly."""
    from advkit.evaluation.metrics import is_nonincreasing

    values = [p.value for _, p in d.curve]
    ok = is_nonincreasing(values)
    return Finding(check="certified_curve_rises", severity="info" if ok else "critical",
                   metric="certified accuracy", value=values[0] if values else None,
                   threshold=None, passed=ok, threat="defenses", threat_tag=_tag(d.name),
                   scenario=f"defenses/{d.key}/certify",
                   why=f"{d.key}: certified accuracy "
                       + ("never rises with the L2 radius" if ok else
                          "rises with the L2 radius somewhere: the certificates are inconsistent"),
                   fix="" if ok else "report this as a bug in advkit's CERTIFY")


# ---------------------------------------------------------------- the section

def add_to(report: Report, records: list[dict], ctx) -> None:
    if not records:
        return
    y = ctx.y.cpu()
    base_clean = proportion(ctx.clean_pred.cpu() == y)
    undefended = _undefended(report, records, ctx)
    defs = _defenses(records, ctx)
    findings = []
    for d in defs:
        f = _gap_finding(d) if d.kind == "transform" else (
            _hardening_finding(d) if d.kind == "output" else None)
        if f is not None:
            findings.append(f)
        if d.kind == "certify" and d.curve:
            findings.append(_curve_finding(d))
        findings.append(_cost_finding(d))
    for d in defs:
        report.scenarios.extend(_judge(d, ctx.spec.verdicts.evasion, findings))
    budgets = sorted(set(undefended) | {b for d in defs for b in d.robust})
    from advkit.audit import defenses_tables

    report.sections.append(defenses_tables.section(defs, budgets, undefended, base_clean))
    report.findings.extend(findings)
    report.verdicts.append(_verdict(defs, undefended))


def _verdict(defs: list[_Defense], undefended: dict) -> Verdict:
    figures = []
    for d in defs:
        j = d.judged
        if j is None:
            text = f"{d.key} ({d.kind}): not assessed (no budget above 0 could be judged)"
        else:
            b = (j["norm"], j["eps"])
            before = undefended.get(b)
            what = "certified" if d.kind == "certify" else "worst-case robust"
            text = (f"{d.key} ({d.kind}): {STATUS_TEXT[d.status]} — {what} accuracy "
                    f"{j['robust_accuracy']} at {_bt(b)}, clean accuracy {d.clean}"
                    + (f" (undefended: {before})" if before is not None else ""))
        figures.append({"defense": d.key, "kind": d.kind, "status": d.status,
                        "judged": j is not None, "vulnerable": d.status == "vulnerable",
                        "robust_accuracy": None if j is None else j["robust_accuracy"],
                        "clean_accuracy": d.clean, "required": None if j is None else
                        j["required"], "norm": None if j is None else j["norm"],
                        "eps": None if j is None else j["eps"], "text": text})
    statuses = [d.status for d in defs if d.judged is not None]
    held = [d.key for d in defs if d.status == "robust"]
    for f in figures:  # the figures that decide the family's status (the headline: the first)
        f["judged"] = f["judged"] and (f["defense"] in held or not held)
    if held:
        status, reason = "robust", (f"{', '.join(held)} kept the worst case above the evasion "
                                    "rule at the judged budget; the others did not")
    elif "inconclusive" in statuses:
        status, reason = "inconclusive", ("no defense clearly held: the ones that cleared the "
                                          "rule mask gradients, or their adaptive attack did "
                                          "worse than the naive one")
    elif statuses:
        status, reason = "vulnerable", "no tested defense kept the worst case above the rule"
    else:
        status, reason = "not assessed", "no defense could be judged at a budget above 0"
    rule = {"text": "each defense by the evasion rule (verdicts.evasion) on its worst case under "
                    "adaptive attack (certified accuracy for randomized smoothing) against its own "
                    "clean accuracy, inconclusive when it clears the rule but masks gradients; "
                    "the family is robust when at least one defense is",
            "per_defense": {d.key: d.status for d in defs}}
    return Verdict(threat="defenses", status=status, figures=figures, rule=rule, reason=reason)


def curve_plots(defs, budgets, undefended, base_clean) -> list[Plot]:
    plots = []
    for norm in sorted({b[0] for b in budgets}):
        series = []
        rows = [("undefended", base_clean, undefended)] + [(d.key, d.clean, d.robust)
                                                           for d in defs]
        for label, clean, robust in rows:
            pts = [(0.0, clean)] + sorted((b[1], p) for b, p in robust.items() if b[0] == norm)
            if len(pts) > 1:
                series.append(Series(label, [e for e, _ in pts], [p.value for _, p in pts],
                                     [p.lo for _, p in pts], [p.hi for _, p in pts]))
        if series:
            plots.append(Plot(title=f"Worst-case robust accuracy per defense ({norm})",
                              xlabel="eps", ylabel="robust accuracy", series=series,
                              ylim=(0.0, 1.0)))
    return plots

