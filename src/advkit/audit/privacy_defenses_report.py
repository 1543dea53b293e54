"""The privacy_defenses family's part of the report, built from its stored records and the
undefended figures the privacy and extraction families already put in the report.

Per defense: the test accuracy on the evaluated points, the accountant's epsilon (DP-SGD), the
strongest re-run membership attack (highest TPR at 1 % FPR) with its AUC, and the largest
empirical epsilon lower bound, and Copycat's fidelity at its largest budget; two scatter plots
put utility against leakage (test accuracy against TPR at 1 % FPR, and against fidelity). Rules:
a DP-SGD model whose empirical epsilon lower bound exceeds the accountant's epsilon is a critical
finding (the training or its accounting is wrong: a sound bound can never exceed a true
guarantee); a defense that leaves the strongest attack's ROC AUC no lower than on the
undefended model is a warning (it does not mitigate membership inference here). AUC judges, not
the TPR at 1 % FPR: with a few hundred non-members that FPR rests on one or two of them.
"""

from __future__ import annotations

from advkit.audit.extraction_report import _prop
from advkit.audit.privacy_report import JUDGED_FPR, _tpr
from advkit.audit.report import Finding, Plot, Report, ScenarioResult, Section, Series, Table
from advkit.evaluation.metrics import Proportion, proportion_of
from advkit.threat_tags import MITIGATES_EXTRACTION, MITIGATES_MEMBERSHIP

BASELINE = "none (audited model)"


def results(records: list[dict]) -> list[ScenarioResult]:
    out = []
    for r in records:
        common = dict(id=r["id"], attack=r["attack"], seconds=r["seconds"],
                      from_store=bool(r.get("from_store")))
        params = {"defense": r["defense"], "undefended": r.get("undefended")}
        if r["kind"] == "model":
            m = {"test_accuracy": _prop(r["accuracy"])}
            if "dp" in r:
                m["accountant_epsilon"] = r["dp"]["epsilon"]
            out.append(ScenarioResult(kind="privacy_defense_model", params=params, metrics=m,
                                      **common))
        elif r["kind"] == "references":
            out.append(ScenarioResult(kind="privacy_defense_references", params={
                **params, "n_reference": r["n_reference"]}, metrics={
                "pool": r["pool"], "member_accuracy": r["member_accuracy"]}, **common))
        elif r["kind"] == "membership" and r.get("not_applicable"):
            out.append(ScenarioResult(kind="privacy_defense_membership", params={
                **params, "not_applicable": r["not_applicable"]}, metrics={
                "auc": None, "tpr_at_1%_fpr": None, "epsilon_lower_bound": None}, **common))
        elif r["kind"] == "membership":
            m = r["variants"][r["headline"]]
            out.append(ScenarioResult(kind="privacy_defense_membership", params=params, metrics={
                "auc": m["auc"], "tpr_at_1%_fpr": _tpr(m, JUDGED_FPR),
                "epsilon_lower_bound": m["epsilon_lower_bound"]["epsilon"]}, **common))
        else:
            out.append(ScenarioResult(kind="privacy_defense_extraction", params={
                **params, "budget": r["budget"]}, metrics={
                "queries": r["queries"], "fidelity_test": _prop(r["fidelity_test"])}, **common))
    return out


def _row(accuracy: Proportion | None, eps: float | None, attacks: list[tuple],
         steals: list[tuple]) -> dict:
    """``attacks``: (name, auc, tpr Proportion, eps_lb); ``steals``: (budget, fidelity). The
    leakage figures are each the largest over the attacks (the strongest attacker's view)."""
    best = max(attacks, key=lambda a: a[1], default=None)
    steal = max(steals, key=lambda s: s[0], default=None)
    return {"accuracy": accuracy, "accountant_epsilon": eps,
            "attack": None if best is None else best[0],
            "auc": None if best is None else best[1],
            "tpr": max((a[2] for a in attacks), key=lambda t: t.value, default=None),
            "empirical_epsilon": max((a[3] for a in attacks), default=None),
            "budget": None if steal is None else steal[0],
            "fidelity": None if steal is None else steal[1]}


def _baseline(report: Report, ctx, rerun: set[str], budgets: set) -> dict:
    attacks = [(s.params["label"], s.metrics["auc"], s.metrics["tpr_at_1%_fpr"],
                s.metrics["epsilon_lower_bound"]) for s in report.scenarios
               if s.kind == "privacy" and s.id in rerun and s.metrics["tpr_at_1%_fpr"]]
    steals = [(s.params["budget"], s.metrics["fidelity_test"]) for s in report.scenarios
              if s.kind == "extraction" and s.id in budgets]
    acc = None
    if ctx is not None and ctx.y.numel():
        acc = proportion_of(int((ctx.clean_pred == ctx.y).sum()), int(ctx.y.shape[0]))
    dp = (report.model or {}).get("dp")
    return _row(acc, dp["epsilon"] if dp else None, attacks, steals)


def _rows(records: list[dict]) -> dict[str, dict]:
    out = {}
    for key in dict.fromkeys(r["defense"] for r in records):
        rs = [r for r in records if r["defense"] == key]
        model = next(r for r in rs if r["kind"] == "model")
        attacks = []
        for r in rs:
            if r["kind"] == "membership" and not r.get("not_applicable"):
                m = r["variants"][r["headline"]]
                attacks.append((r["label"], m["auc"], _tpr(m, JUDGED_FPR),
                                m["epsilon_lower_bound"]["epsilon"]))
        steals = [(r["budget"], _prop(r["fidelity_test"])) for r in rs if r["kind"] == "extract"]
        row = _row(_prop(model["accuracy"]), model.get("dp", {}).get("epsilon"), attacks, steals)
        out[key] = {**row, "name": model["defense_name"], "model": model}
    return out


def _scatter(rows: dict[str, dict], field: str, ylabel: str, title: str) -> Plot | None:
    series = [Series(k, [r["accuracy"].value], [r[field].value]) for k, r in rows.items()
              if r["accuracy"] is not None and r[field] is not None]
    if len(series) < 2:
        return None
    return Plot(title=title, xlabel="test accuracy (evaluated points)", ylabel=ylabel,
                series=series, kind="scatter")


def _findings(key: str, r: dict, base: dict) -> list[Finding]:
    out = []
    sid = f"privacy_defenses/{key}/model"
    eps, lb = r["accountant_epsilon"], r["empirical_epsilon"]
    if eps is not None and lb is not None:
        ok = lb <= eps
        out.append(Finding(
            check=f"privacy_defenses.{key}.epsilon", severity="info" if ok else "critical",
            metric="empirical_epsilon_lower_bound", value=lb, threshold=eps, passed=ok,
            threat="privacy", scenario=sid, threat_tag=MITIGATES_MEMBERSHIP,
            why=(f"{key}: the attacks' empirical epsilon lower bound {lb:.2f} is "
                 + (f"within the accountant's epsilon {eps:.2f}" if ok else
                    f"ABOVE the accountant's epsilon {eps:.2f}: the DP guarantee does not hold "
                    "(training or accounting is wrong)")),
            fix="none needed" if ok else "check the DP-SGD settings and the Opacus version"))
    if r["auc"] is not None and base["auc"] is not None:
        fell = r["auc"] < base["auc"]
        acc = (f"; test accuracy {base['accuracy'].value:.1%} -> {r['accuracy'].value:.1%}"
               if base["accuracy"] is not None and r["accuracy"] is not None else "")
        out.append(Finding(
            check=f"privacy_defenses.{key}.membership", severity="info" if fell else "warning",
            metric="auc", value=r["auc"], threshold=base["auc"], passed=fell, threat="privacy",
            scenario=sid, threat_tag=MITIGATES_MEMBERSHIP,
            why=(f"{key}: the strongest re-run membership attack ({r['attack']}) has ROC AUC "
                 f"{r['auc']:.3f} against {base['auc']:.3f} without the defense; the best TPR "
                 f"at 1 % FPR is {r['tpr'].value:.1%} against {base['tpr'].value:.1%}{acc}"),
            fix="none needed" if fell else "a stronger setting (more DP noise, more "
                "regularisation) or another defense"))
    if r["fidelity"] is not None and base["fidelity"] is not None:
        fell = r["fidelity"].value < base["fidelity"].value
        out.append(Finding(
            check=f"privacy_defenses.{key}.extraction", severity="info", metric="fidelity_test",
            value=r["fidelity"].value, threshold=base["fidelity"].value, passed=fell,
            threat="extraction", scenario=sid, threat_tag=MITIGATES_EXTRACTION,
            why=(f"{key}: Copycat's fidelity at {r['budget']} queries is "
                 f"{r['fidelity'].value:.1%} against {base['fidelity'].value:.1%} without it"),
            fix="none needed" if fell else "Copycat learns from labels alone, which "
                "neither training defenses nor output hardening withhold; rate-limit and monitor "
                "queries, watermark the model"))
    return out


def add_to(report: Report, records: list[dict], ctx=None) -> None:
    if not records:
        return
    rows = _rows(records)
    rerun = {r["undefended"] for r in records if r["kind"] == "membership"}
    budgets = {r["undefended"] for r in records if r["kind"] == "extract"}
    base = _baseline(report, ctx, rerun, budgets)
    every = {BASELINE: base, **rows}
    table = [[k, r["accuracy"], r["accountant_epsilon"], r["empirical_epsilon"], r["attack"],
              r["auc"], r["tpr"], r["budget"], r["fidelity"]] for k, r in every.items()]
    plots = [p for p in (
        _scatter(every, "tpr", "TPR at 1 % FPR (strongest membership attack)",
                 "Utility against membership leakage"),
        _scatter(every, "fidelity", "Copycat fidelity (largest budget)",
                 "Utility against extraction fidelity")) if p is not None]
    notes = sorted({n for r in records for n in r.get("notes", [])})
    text = ("The privacy section's membership attacks and the extraction section's Copycat "
            "budgets re-run against each defended model, on the same members, non-members and "
            "query draws as the undefended run. Accountant epsilon: the DP-SGD guarantee "
            "(Opacus, at the delta given); empirical epsilon: the largest Jagielski et al. "
            "(2020) lower bound of the re-run attacks, which a sound guarantee must bound. "
            "LiRA and RMIA against a training defense use reference models trained with the "
            "defended recipe (DP-SGD, weight decay or fewer epochs, as the defended model); "
            "against output hardening they keep the undefended references and only the "
            "answers change (the references' answers hardened the same way, as an attacker who "
            "knows the API would); against a labels-only target they are "
            "not applicable (they need scores).")
    if notes:
        text += " Notes: " + "; ".join(notes) + "."
    report.sections.append(Section(
        title="Privacy defenses: utility against leakage", text=text, plots=plots,
        tables=[Table(columns=["defense", "test accuracy", "accountant epsilon",
                               "empirical epsilon (LB)", "strongest attack", "ROC AUC",
                               "TPR at 1 % FPR", "Copycat queries", "Copycat fidelity"],
                      rows=table)]))
    for key, r in rows.items():
        report.findings += _findings(key, r, base)
