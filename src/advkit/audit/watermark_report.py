"""The watermark family's part of the report, built from its stored records only.

One scenario result per stage; one table (the audited model's accuracy, then the marked model, the
independent one and each removal attack: the share of the ``k`` trigger labels it answers, the
false-claim probability ``P[Binomial(k, 1/C) >= agreements]``, whether the owner's claim holds
(probability below the section's ``threshold``), accuracy on the evaluated points and agreement
with the marked model there); one verdict line per removal (the watermark survives, or is
removed); findings tagged with the extraction mitigation (AML.T0024.002). Rules (module
constants):

- the marked model must be claimed and the independent one must not (else critical: the mark was
  not learned, or the test accuses an innocent model);
- the mark may cost at most ``MAX_COST`` of accuracy on the evaluated points (else a warning);
- a removal that leaves the claim standing passes; one that removes it while the model keeps its
  accuracy (at most ``USEFUL_DROP`` below the marked model's) is a warning: an attacker can take
  the model and deny its origin; one that removes it only by wrecking the model passes, and says
  what it cost.
"""

from __future__ import annotations

from advkit.audit.report import Finding, Report, ScenarioResult, Section, Table
from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import MITIGATES_EXTRACTION

MAX_COST = 0.05
USEFUL_DROP = 0.05
_prop = Proportion.from_dict


def describe(r: dict) -> str:
    """``fine-tune (3 epochs, lr 0.0001)``: a removal record's attack and setting."""
    p = r.get("params", {})
    if r["attack"] == "fine-tune":
        return f"fine-tune ({p['epochs']} epochs, lr {p['lr']:g})"
    if r["attack"] == "prune":
        return f"prune ({p['rate']:.0%} of each layer's weights)"
    if r["attack"] == "extract":
        return f"extract (Copycat, {r['queries']} {p.get('strategy', 'random')} queries)"
    return r["attack"]


def results(records: list[dict], threshold: float) -> list[ScenarioResult]:
    out = []
    for r in records:
        m = {"agreements": r["agreements"], "false_claim_probability": r["p_value"],
             "claimed": r["p_value"] < threshold, "test_accuracy": _prop(r["accuracy"])}
        if "fidelity" in r:
            m["agreement_with_marked"] = _prop(r["fidelity"])
        if "queries" in r:
            m["queries"] = r["queries"]
        out.append(ScenarioResult(
            id=r["id"], kind="watermark", attack=r["attack"],
            params={"label": r["label"], "k": r["k"], "repeat": r["repeat"],
                    **r.get("params", {})},
            metrics=m, seconds=r["seconds"], from_store=bool(r.get("from_store"))))
    return out


def _finding(check: str, *, severity: str, metric: str, value, threshold, passed: bool,
             scenario: str, why: str, fix: str) -> Finding:
    return Finding(check=f"watermark.{check}", severity=severity, metric=metric, value=value,
                   threshold=threshold, passed=passed, threat="extraction", scenario=scenario,
                   threat_tag=MITIGATES_EXTRACTION, why=why, fix=fix)


def _num(x: float) -> str:
    """``1e-30``, ``0.18``: a probability in two significant digits, short exponents."""
    return f"{x:.2g}".replace("e-0", "e-").replace("e+0", "e+")


def _claim_text(r: dict, threshold: float) -> str:
    a = _prop(r["agreement"])
    return (f"{r['agreements']} of {a.n} trigger labels, false-claim probability "
            f"{_num(r['p_value'])} ({'<' if r['p_value'] < threshold else '>='} "
            f"{_num(threshold)})")


def _removal(r: dict, marked: dict, threshold: float) -> tuple[str, Finding]:
    held = r["p_value"] < threshold
    acc, macc = _prop(r["accuracy"]).value, _prop(marked["accuracy"]).value
    drop = macc - acc
    what = describe(r)
    head = what if r["label"] == r["attack"] else f"{r['label']}, {what}"
    line = (f"{head}: the watermark " + ("survives" if held else "is removed")
            + f" ({_claim_text(r, threshold)}); accuracy {acc:.1%} against the marked model's "
            f"{macc:.1%}, agreement with it {_prop(r['fidelity']).value:.1%}")
    common = dict(metric="false_claim_probability", value=r["p_value"], threshold=threshold,
                  scenario=r["id"])
    if held:
        f = _finding(f"removal.{r['label']}", severity="info", passed=True, **common,
                     why=f"{line}: the owner still proves ownership", fix="none needed")
    elif drop <= USEFUL_DROP:
        f = _finding(f"removal.{r['label']}", severity="warning", passed=False, **common,
                     why=f"{line}: an attacker keeps a useful model (accuracy within "
                         f"{USEFUL_DROP * 100:.0f} points of the marked model's) and the owner "
                         "cannot prove it is theirs",
                     fix=("against extraction, limit and monitor queries: a trigger-set mark "
                          "does not pass to a copy trained on answers to in-distribution "
                          "inputs" if r["attack"] == "extract" else
                          "more copies of the trigger set (repeat) or a larger k"))
    else:
        f = _finding(f"removal.{r['label']}", severity="info", passed=True, **common,
                     why=f"{line}: the mark goes only with {drop * 100:.1f} points of accuracy "
                         f"(more than {USEFUL_DROP * 100:.0f})",
                     fix="none needed at this cost; a stronger attacker (more queries or "
                         "epochs) may keep more accuracy")
    return line, f


def add_to(report: Report, records: list[dict], threshold: float) -> None:
    if not records:
        return
    by_kind = {r["kind"]: r for r in records if r["kind"] != "removal"}
    marked, ind = by_kind["marked"], by_kind["independent"]
    removals = [r for r in records if r["kind"] == "removal"]
    k = marked["k"]

    def row(name: str, setting: str, r: dict) -> list:
        return [name, setting, _prop(r["agreement"]), r["p_value"],
                "claimed" if r["p_value"] < threshold else "not claimed", _prop(r["accuracy"]),
                _prop(r["fidelity"]) if "fidelity" in r else None]

    rows = [["audited model (unmarked)", "", None, None, None,
             _prop(marked["audited_accuracy"]), None],
            row("marked", f"k={k}, {marked['repeat']} copies, audited model's seed", marked),
            row("independent", f"same recipe, seed {ind['train']['seed']}, no trigger set", ind),
            *[row(f"removal: {r['label']}", describe(r), r) for r in removals]]
    n_classes = marked["n_classes"]
    text = (f"Adi et al. (2018) trigger-set watermark: the model's recipe trained on its training "
            f"split plus {marked['repeat']} copies of {k} secret inputs uniform in the input "
            f"bounds with uniformly random labels. A suspect model is claimed when the "
            f"probability that a model independent of the secret labels agrees with at least as "
            f"many of them, P[Binomial({k}, 1/{n_classes}) >= agreements], is below "
            f"{_num(threshold)}. Removal attacks act on the marked model; accuracy and agreement "
            f"with the marked model are on the evaluated test points (95 % Wilson intervals).")
    lines = [f"Marked model: {_claim_text(marked, threshold)}; "
             + ("claimed." if marked["p_value"] < threshold else "NOT claimed: the mark was "
                "not learned."),
             f"Independent model: {_claim_text(ind, threshold)}; "
             + ("not claimed." if ind["p_value"] >= threshold else "CLAIMED: a false claim.")]
    findings = _base_findings(marked, ind, threshold)
    verdicts = []
    for r in removals:
        line, f = _removal(r, marked, threshold)
        verdicts.append(("" if marked["p_value"] < threshold else "(the mark never held) ")
                        + line)
        findings.append(f)
    paragraphs = [text, "\n".join(lines)] + (["\n".join(verdicts)] if verdicts else [])
    report.sections.append(Section(
        title="Watermark: ownership claims and removal", text="\n\n".join(paragraphs),
        tables=[Table(columns=["model", "setting", "trigger agreement", "false-claim probability",
                               "claim", "test accuracy", "agreement with marked"], rows=rows)]))
    report.findings += findings


def _base_findings(marked: dict, ind: dict, threshold: float) -> list[Finding]:
    claimed = marked["p_value"] < threshold
    accused = ind["p_value"] < threshold
    acc, base = _prop(marked["accuracy"]), _prop(marked["audited_accuracy"])
    cost = base.value - acc.value
    return [
        _finding("marked.claim", severity="info" if claimed else "critical",
                 metric="false_claim_probability", value=marked["p_value"], threshold=threshold,
                 passed=claimed, scenario=marked["id"],
                 why=f"the marked model answers {_claim_text(marked, threshold)}"
                     + ("" if claimed else ": the owner cannot prove even the original"),
                 fix="none needed" if claimed else "more copies of the trigger set (repeat), "
                     "more epochs, or a larger model"),
        _finding("independent.false_claim", severity="critical" if accused else "info",
                 metric="false_claim_probability", value=ind["p_value"], threshold=threshold,
                 passed=not accused, scenario=ind["id"],
                 why=f"a model of the same recipe trained without the trigger set answers "
                     f"{_claim_text(ind, threshold)}"
                     + (": the test would accuse an innocent model" if accused else ""),
                 fix="a smaller threshold or a larger k" if accused else "none needed"),
        _finding("accuracy_cost", severity="warning" if cost > MAX_COST else "info",
                 metric="accuracy_cost", value=cost, threshold=MAX_COST,
                 passed=cost <= MAX_COST, scenario=marked["id"],
                 why=f"the marked model's accuracy on the evaluated points is {acc.value:.1%} "
                     f"against the audited model's {base.value:.1%}",
                 fix="none needed" if cost <= MAX_COST else "fewer copies of the trigger set "
                     "(repeat) or a smaller k"),
    ]
