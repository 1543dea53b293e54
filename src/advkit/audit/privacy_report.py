"""The privacy family's part of the report, built from its stored records only.

One scenario result per membership attack (its judged variant), a table with every score
variant, a log-log ROC plot of the judged variants, the judged score's leakage per class and on
the misclassified points (``advkit.audit.privacy_slices_report``), findings tagged AML.T0024.000
and the privacy verdict. Rule (module constants): an attack leaks membership when, at the judged
FPR ``JUDGED_FPR`` (1 %), the lower end of its TPR's 95 % Clopper-Pearson interval is above that
FPR: the attack finds members more often than a coin with the same false-positive rate, with 95 %
confidence. It is judged only where the non-members resolve that FPR (at least 1/FPR of them); at
0.1 % FPR the same test makes the finding critical.
"""

from __future__ import annotations

from advkit.audit import privacy_slices_report
from advkit.audit.report import (
    Finding,
    Plot,
    Report,
    ScenarioResult,
    Section,
    Series,
    Table,
    Verdict,
)
from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import tag

JUDGED_FPR = 0.01
STRICT_FPR = 0.001
KNOWLEDGE = {"loss": "black box", "entropy": "black box", "lira": "grey box", "rmia": "grey box",
             "label-only": "black box", "shadow": "grey box"}
NAMES = {"loss": "LOSS (Yeom et al. 2018)", "entropy": "modified entropy (Song & Mittal 2021)",
         "lira": "LiRA (Carlini et al. 2022)", "rmia": "RMIA (Zarifzadeh et al. 2024)",
         "label-only": "label-only (Choquette-Choo et al. 2021)",
         "shadow": "shadow models (Shokri et al. 2017)"}


def _tpr(m: dict, fpr: float) -> Proportion | None:
    t = m["tpr_at_fpr"].get(str(fpr))
    if t is None:
        return None
    return Proportion(int(t["tp"]), int(t["n_members"]), t["ci_low"], t["ci_high"],
                      t.get("confidence", 0.95))


def _resolvable(m: dict, fpr: float) -> bool:
    t = m["tpr_at_fpr"].get(str(fpr))
    return bool(t and t["resolvable"])


def _leaks(m: dict, fpr: float) -> bool | None:
    """True/False by the rule at ``fpr``; None when the non-members cannot resolve it."""
    if not _resolvable(m, fpr):
        return None
    p = _tpr(m, fpr)
    return p is not None and p.lo > fpr


def _membership(records: list[dict]) -> list[dict]:
    return [r for r in records if r["kind"] == "membership"]


def results(records: list[dict]) -> list[ScenarioResult]:
    out = []
    for r in records:
        common = dict(id=r["id"], attack=r["attack"], seconds=r["seconds"],
                      from_store=bool(r.get("from_store")))
        if r["kind"] == "references":
            out.append(ScenarioResult(kind="privacy_references", params={
                "n_reference": r["n_reference"]}, metrics={
                "pool": r["pool"], "member_accuracy": r["member_accuracy"]}, **common))
            continue
        if r["kind"] != "membership":
            continue  # inversion and attribute stages: advkit.audit.inversion_report
        m = r["variants"][r["headline"]]
        out.append(ScenarioResult(kind="privacy", params={
            "label": r["label"], "variant": r["headline"], **r["params"]}, metrics={
            "auc": m["auc"], "advantage": m["advantage"],
            "tpr_at_0.1%_fpr": _tpr(m, STRICT_FPR), "tpr_at_1%_fpr": _tpr(m, JUDGED_FPR),
            "epsilon_lower_bound": m["epsilon_lower_bound"]["epsilon"],
            "train_accuracy": r["train_accuracy"], "test_accuracy": r["test_accuracy"],
            "n_members": r["n_members"], "n_nonmembers": r["n_nonmembers"],
            **({"queries": r["queries"]} if "queries" in r else {})}, **common))
    return out


def _finding(r: dict) -> Finding:
    m = r["variants"][r["headline"]]
    judged, strict = _leaks(m, JUDGED_FPR), _leaks(m, STRICT_FPR)
    t1 = _tpr(m, JUDGED_FPR)
    what = f"{r['label']} ({r['headline']})" if r["headline"] != r["attack"] else r["label"]
    th = tag("AML.T0024.000", KNOWLEDGE[r["attack"]])
    gap = r["train_accuracy"] - r["test_accuracy"]
    if judged is None:
        return Finding(
            check=f"privacy.membership.{r['label']}", severity="info", metric="tpr_at_1%_fpr",
            value=None if t1 is None else t1.value, threshold=JUDGED_FPR, passed=False,
            skipped=True, threat="privacy", scenario=r["id"], threat_tag=th,
            why=f"{what}: {r['n_nonmembers']} non-members cannot resolve a 1 % FPR (AUC "
                f"{m['auc']:.3f})", fix="raise privacy.members to at least 100")
    sev = "critical" if strict else "warning" if judged else "info"
    return Finding(
        check=f"privacy.membership.{r['label']}", severity=sev, metric="tpr_at_1%_fpr",
        value=t1.value, threshold=JUDGED_FPR, passed=not judged, threat="privacy",
        scenario=r["id"], threat_tag=th,
        why=(f"{what} finds {t1.value:.1%} of the training members at 1 % FPR (95 % interval "
             f"{t1.lo:.1%} to {t1.hi:.1%}); AUC {m['auc']:.3f}, advantage {m['advantage']:.3f}, "
             f"empirical epsilon >= {m['epsilon_lower_bound']['epsilon']:.2f}; the model's "
             f"train-test accuracy gap is {gap:+.1%}"),
        fix=("reduce overfitting (weight decay, early stopping, more data) or train with "
             "DP-SGD; return labels or rounded scores only" if judged else "none needed"))


def _roc_plot(rs: list[dict]) -> Plot:
    series = []
    for r in rs:
        roc = r["variants"][r["headline"]]["roc"]
        pts = [(f, t) for f, t in zip(roc["fpr"], roc["tpr"], strict=True) if f > 0 and t > 0]
        if pts:
            name = r["label"] if r["headline"] == r["attack"] else f"{r['label']} ({r['headline']})"
            series.append(Series(name, [f for f, _ in pts], [t for _, t in pts]))
    lo = min((s.x[0] for s in series), default=1e-3)
    series.append(Series("chance (TPR = FPR)", [lo, 1.0], [lo, 1.0]))
    return Plot(title="Membership inference ROC (log-log)", xlabel="false positive rate",
                ylabel="true positive rate", series=series, scale="loglog")


def add_to(report: Report, records: list[dict]) -> None:
    rs = _membership(records)
    if not rs:
        return
    rows = []
    for r in rs:
        for v, m in r["variants"].items():
            rows.append([r["label"], v + (" (judged)" if v == r["headline"] else ""), m["auc"],
                         _tpr(m, STRICT_FPR), _tpr(m, JUDGED_FPR), m["advantage"],
                         m["epsilon_lower_bound"]["epsilon"]])
    refs = [r for r in records if r["kind"] == "references"]
    first = rs[0]
    text = (f"{first['n_members']} members drawn from the training split (the audited model "
            f"trained on all of it) and {first['n_nonmembers']} non-members from the test split "
            f"are scored by each attack through the model's probabilities"
            + "".join(f" ({r['label']}: its predicted labels only, {r['queries']:,} label "
                      "queries)" for r in rs if "queries" in r)
            + ". The model's accuracy "
            f"on them: {first['train_accuracy']:.1%} (members), {first['test_accuracy']:.1%} "
            "(non-members). TPR at a fixed FPR: the threshold is fixed on the non-members, the "
            "interval is 95 % Clopper-Pearson; empirical epsilon: the Jagielski et al. (2020) "
            "lower bound (delta 1e-5), a heuristic on population scores, not a certified audit. "
            "Attacks: " + "; ".join(NAMES[a] for a in dict.fromkeys(r["attack"] for r in rs))
            + ".")
    if refs:
        text += " Reference models: " + "; ".join(
            f"{r['n_reference']} of the recipe, trained on random halves of a {r['pool']}-point "
            f"pool (training split and non-members), {r['member_accuracy']:.1%} accurate on "
            "their members" for r in refs) + "."
    dp = (report.model or {}).get("dp")
    if dp:  # the audited model was trained with DP-SGD: its guarantee beside the bounds
        worst = max(m["epsilon_lower_bound"]["epsilon"] for r in rs for m in r["variants"].values())
        text += (f" The model was trained with DP-SGD (noise multiplier {dp['noise_multiplier']:g}, "
                 f"clipping norm {dp['max_grad_norm']:g}): the accountant's epsilon is "
                 f"{dp['epsilon']:.2f} at delta {dp['delta']:g}, and the largest empirical "
                 f"epsilon lower bound above is {worst:.2f}"
                 + (" (within it)." if worst <= dp["epsilon"] else
                    " - ABOVE it: the guarantee does not hold."))
    notes = sorted({n for r in rs + refs for n in r.get("notes", [])})
    if notes:
        text += " Notes: " + "; ".join(notes) + "."
    report.sections.append(Section(
        title="Privacy: membership inference", text=text, plots=[_roc_plot(rs)],
        tables=[Table(columns=["attack", "score variant", "ROC AUC", "TPR at 0.1 % FPR",
                               "TPR at 1 % FPR", "advantage", "empirical epsilon (LB)"],
                      rows=rows)] + privacy_slices_report.tables(rs)))
    findings = [_finding(r) for r in rs]
    report.findings += findings + privacy_slices_report.findings(rs, KNOWLEDGE)
    figures = []
    for r, f in zip(rs, findings, strict=True):
        m = r["variants"][r["headline"]]
        t1 = _tpr(m, JUDGED_FPR)
        figures.append({"attack": r["label"], "variant": r["headline"], "auc": m["auc"],
                        "tpr_at_1%_fpr": t1, "judged": not f.skipped,
                        "vulnerable": None if f.skipped else not f.passed,
                        "text": f"{r['label']} ({r['headline']}): TPR at 1 % FPR {t1}, AUC "
                                f"{m['auc']:.3f}"})
    judged = [f for f in figures if f["judged"]]
    vulnerable = any(f["vulnerable"] for f in judged)
    status = "not assessed" if not judged else "vulnerable" if vulnerable else "robust"
    report.verdicts.append(Verdict(
        threat="privacy", status=status, figures=figures,
        rule={"judged_fpr": JUDGED_FPR, "text": "vulnerable when some attack's TPR at 1 % FPR "
              "has its 95 % Clopper-Pearson lower bound above 1 % (better than chance at that "
              "false-positive rate)"},
        reason=("too few non-members to resolve a 1 % FPR" if not judged else
                "a membership attack identifies training members better than chance at a low "
                "false-positive rate" if vulnerable else
                "no tested membership attack beat chance at 1 % FPR; stronger attacks (more "
                "reference models) may still")))
