"""The extraction family's part of the report, built from its stored records only.

One scenario result per stage, a table (fidelity on test and uniform points with 95 % Wilson
intervals, the stolen and the victim model's test accuracy, queries spent, time), the
fidelity-versus-queries curve, findings tagged AML.T0024.002 and the extraction verdict. Rule
(module constant): the model is stolen when some attack's substitute agrees with it on at least
``STOLEN`` of the test points (its estimate) within the queries it spent.
"""

from __future__ import annotations

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

STOLEN = 0.9
NAMES = {"copycat": "Copycat / Knockoff (learning-based)", "equations": "equation solving",
         "tree": "decision-tree path finding"}
KNOWLEDGE = {"copycat": "black box", "equations": "grey box", "tree": "black box"}


_prop = Proportion.from_dict


def results(records: list[dict]) -> list[ScenarioResult]:
    return [ScenarioResult(
        id=r["id"], kind="extraction", attack=r["attack"],
        params={"label": r["label"], "budget": r["budget"], **r["params"]},
        metrics={"queries": r["queries"], "fidelity_test": _prop(r["fidelity_test"]),
                 "fidelity_uniform": _prop(r["fidelity_uniform"]),
                 "stolen_accuracy": _prop(r["accuracy"]),
                 "victim_accuracy": _prop(r["victim_accuracy"])},
        seconds=r["seconds"], from_store=bool(r.get("from_store"))) for r in records]


def _by_label(records: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["label"], []).append(r)
    for rs in out.values():
        rs.sort(key=lambda r: r["queries"])
    return out


def _finding(label: str, rs: list[dict]) -> tuple[Finding, dict]:
    best = max(rs, key=lambda r: (_prop(r["fidelity_test"]).value, -r["queries"]))
    ft, fu = _prop(best["fidelity_test"]), _prop(best["fidelity_uniform"])
    stolen = ft.value >= STOLEN
    acc = _prop(best["accuracy"])
    f = Finding(
        check=f"extraction.{label}", severity="critical" if stolen else "info",
        metric="fidelity_test", value=ft.value, threshold=STOLEN, passed=not stolen,
        threat="extraction", scenario=best["id"],
        threat_tag=tag("AML.T0024.002", KNOWLEDGE[best["attack"]]),
        why=(f"{label} ({NAMES[best['attack']]}) with {best['queries']} queries: the stolen model "
             f"agrees with the victim on {ft.value:.1%} of test points (95 % interval "
             f"{ft.lo:.1%} to {ft.hi:.1%}) and {fu.value:.1%} of uniform points"
             + (f"; its test accuracy is {acc.value:.1%}" if acc is not None else "")),
        fix=("limit what the API answers (labels only, rounded scores) and how much (query "
             "budgets per client, monitoring of query distributions); watermark the model"
             if stolen else "none needed at these budgets"))
    fig = {"attack": label, "queries": best["queries"], "fidelity_test": ft,
           "fidelity_uniform": fu, "judged": True, "vulnerable": stolen,
           "text": f"{label}: fidelity {ft} on test points with {best['queries']} queries"}
    return f, fig


def _curve(groups: dict[str, list[dict]]) -> Plot:
    series = []
    for label, rs in groups.items():
        for part, name in (("fidelity_test", "test"), ("fidelity_uniform", "uniform")):
            ps = [_prop(r[part]) for r in rs]
            series.append(Series(f"{label} ({name} points)", [r["queries"] for r in rs],
                                 [p.value for p in ps], [p.lo for p in ps], [p.hi for p in ps]))
    return Plot(title="Extraction fidelity against queries", xlabel="victim queries spent",
                ylabel="fidelity (agreement with the victim)", series=series, ylim=(0.0, 1.0))


def add_to(report: Report, records: list[dict]) -> None:
    if not records:
        return
    groups = _by_label(records)
    rows = [[r["label"], r["attack"], r["queries"], _prop(r["fidelity_test"]),
             _prop(r["fidelity_uniform"]), _prop(r["accuracy"]), _prop(r["victim_accuracy"]),
             r["steal_seconds"]] for rs in groups.values() for r in rs]
    n_u = records[0]["fidelity_uniform"]["n"]
    text = ("Each attack queries the audited model through its prediction interface only and "
            "trains or solves a substitute; fidelity is the share of points on which the "
            f"substitute's label equals the victim's, on the evaluated test points and on {n_u} "
            "points uniform in the input bounds (95 % Wilson intervals); accuracy is on the test "
            "labels. Attacks: " + "; ".join(NAMES[a] for a in dict.fromkeys(
                r["attack"] for r in records)) + ".")
    if any(r.get("strategy") in ("natural", "adaptive") for r in records):
        text += (" The natural and adaptive Copycat queries are drawn from the training split's "
                 "inputs (an attacker with unlabelled in-distribution data).")
    report.sections.append(Section(
        title="Extraction: model stealing", text=text, plots=[_curve(groups)],
        tables=[Table(columns=["attack", "method", "queries", "fidelity (test)",
                               "fidelity (uniform)", "stolen accuracy", "victim accuracy",
                               "seconds"], rows=rows)]))
    figures = []
    for label, rs in groups.items():
        f, fig = _finding(label, rs)
        report.findings.append(f)
        figures.append(fig)
    vulnerable = any(f["vulnerable"] for f in figures)
    report.verdicts.append(Verdict(
        threat="extraction", status="vulnerable" if vulnerable else "robust", figures=figures,
        rule={"stolen_at": STOLEN, "text": f"vulnerable when some attack's substitute agrees "
              f"with the model on at least {STOLEN:.0%} of test points"},
        reason=("an attacker with the tested query budget obtains a close functional copy of "
                "the model" if vulnerable else
                "no tested attack reached the fidelity rule at its query budget; larger budgets "
                "may")))
