"""The model-inversion part of the privacy report, built from stored records only.

Rules (module constants):

- **MI-Face** reveals its classes when the lower end of the 95 % Wilson interval of the held-out
  classifier's accuracy on the reconstructions is above chance (1/K): a classifier that never saw
  the model's training data recognises the reconstructed classes more often than guessing;
- **attribute inference** leaks the feature when, on the training members, the lower end of the
  judged method's advantage over the marginal baseline (paired 95 % interval) is above 0.

Findings carry ATLAS AML.T0024.001 (Invert ML Model); they join the privacy verdict.
"""

from __future__ import annotations

import numpy as np

from advkit.audit.backdoor_report import _img
from advkit.audit.report import Finding, Image, Report, ScenarioResult, Section, Table, Verdict
from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import tag

TECHNIQUE = "AML.T0024.001"
RULE = ("when MI-Face's reconstructions are recognised above chance by a held-out classifier, or "
        "attribute inference beats the marginal baseline on training members (95 % lower bounds)")
METHOD_NAMES = {"fredrikson": "Fredrikson et al. 2014 (MAP)",
                "yeom": "Yeom et al. 2018 (lowest loss)"}


_p = Proportion.from_dict


def results(records: list[dict]) -> list[ScenarioResult]:
    out = []
    for r in records:
        common = dict(id=r["id"], attack=r["attack"], seconds=r["seconds"],
                      from_store=bool(r.get("from_store")))
        if r["kind"] == "inversion":
            s = r["scores"]
            out.append(ScenarioResult(kind="privacy_inversion", params=r["params"], metrics={
                "held_out_accuracy": _p(s["held_out_accuracy"]),
                "nearest_mean_accuracy": _p(s["nearest_mean_accuracy"]),
                "similarity_own": float(np.mean(s["similarity_own"])),
                "similarity_other": float(np.mean(s["similarity_other"])),
                "mean_confidence": float(np.mean(r["confidence"])), "queries": r["queries"]},
                **common))
        elif r["kind"] == "attribute":
            m = r["methods"][r["judged"]]
            out.append(ScenarioResult(kind="privacy_attribute", params={
                "feature": r["feature"], "method": r["judged"]}, metrics={
                "accuracy_members": _p(m["members"]["accuracy"]),
                "baseline_members": _p(m["members"]["baseline_accuracy"]),
                "advantage_members": m["members"]["advantage"],
                "accuracy_nonmembers": _p(m["nonmembers"]["accuracy"]),
                "advantage_nonmembers": m["nonmembers"]["advantage"],
                "queries": r["queries"]}, **common))
    return out


def _inversion(report: Report, r: dict) -> tuple[Finding, dict]:
    s, k = r["scores"], len(r["classes"])
    acc, near = _p(s["held_out_accuracy"]), _p(s["nearest_mean_accuracy"])
    chance = s["chance"]
    bounds = tuple(r["bounds"])
    imgs = []
    for i, name in enumerate(r["class_names"]):
        imgs.append(Image(f"{name} ({r['confidence'][i]:.2f})", _img(
            np.asarray(r["reconstructions"][i]), bounds), "MI-Face reconstructions"))
    for i, name in enumerate(r["class_names"]):
        imgs.append(Image(name, _img(np.asarray(r["class_means"][i]), bounds),
                          "training class means"))
    pred = s["held_out_pred"]
    names = r["class_names"]
    all_names = r.get("all_class_names") or [str(c) for c in range(max(pred) + 1)]
    rows = [[names[i], r["confidence"][i], all_names[pred[i]], s["similarity_own"][i],
             s["similarity_other"][i], r["best_step"][i], r["steps_run"][i]] for i in range(k)]
    p = r["params"]
    text = (f"MI-Face (Fredrikson, Jha & Ristenpart 2015, Algorithm 1) descends 1 - f_t(x) from "
            "the all-zeros input, one run per class (top row: the reconstruction and the "
            "model's confidence in its class; bottom row: the class's mean training image, "
            f"for comparison): at most {p['steps']} steps of size {p['lr']}, "
            f"stopping after {p['patience']} steps without progress or at confidence "
            f"{p['min_confidence']}; denoising width {p['denoise']}, total-variation weight "
            f"{p['tv_weight']}; {r['queries']} gradient queries. Scores: a logistic-regression "
            f"classifier fitted on the {r['n_held_out']} test points (never trained on by the "
            f"model) recognises {acc} of the reconstructions (chance {chance:.3f}; its own accuracy "
            f"on the training split {_p(s['held_out_on_train'])}); the nearest training class "
            f"mean is the right one for {near}; cosine similarity to the own class mean (centred) "
            f"{np.mean(s['similarity_own']):.3f} against {np.mean(s['similarity_other']):.3f} to "
            "the other classes' means.")
    report.sections.append(Section(
        title="Privacy: model inversion (MI-Face)", text=text, images=imgs,
        image_columns=min(max(k, 1), 10),
        tables=[Table(columns=["class", "model confidence", "held-out classifier says",
                               "similarity to own mean", "mean similarity to others",
                               "best step", "steps run"], rows=rows)]))
    leaks = acc.n > 0 and acc.lo > chance
    th = tag(TECHNIQUE, "white box")
    f = Finding(
        check="privacy.inversion.mi_face", severity="warning" if leaks else "info",
        metric="held_out_accuracy", value=acc.value, threshold=chance, passed=not leaks,
        threat="privacy", scenario=r["id"], threat_tag=th,
        why=(f"a classifier that never saw the training data recognises {acc} of the MI-Face "
             f"reconstructions (chance {chance:.3f}); nearest class mean right for {near}"),
        fix=("limit what the API returns (labels or rounded scores, no gradients), regularise "
             "or train with DP-SGD" if leaks else "none needed"))
    fig = {"attack": "mi_face", "held_out_accuracy": acc, "judged": acc.n > 0,
           "vulnerable": leaks, "text": f"MI-Face: held-out classifier accuracy on the "
                                        f"reconstructions {acc} (chance {chance:.3f})"}
    return f, fig


def _attribute_rows(r: dict) -> list[list]:
    rows = []
    for method, parts in r["methods"].items():
        for part, m in parts.items():
            lo, hi = m["advantage_ci"]
            rows.append([r["feature"], METHOD_NAMES[method] + (" (judged)" if method == r["judged"]
                                                              else ""),
                         part, _p(m["accuracy"]), _p(m["baseline_accuracy"]), m["advantage"],
                         f"[{lo:.3f}, {hi:.3f}]"])
    return rows


def _attribute(r: dict) -> tuple[Finding, dict]:
    m = r["methods"][r["judged"]]["members"]
    lo, hi = m["advantage_ci"]
    leaks = m["n"] > 1 and lo > 0
    non = r["methods"][r["judged"]]["nonmembers"]
    th = tag(TECHNIQUE, "black box")
    f = Finding(
        check=f"privacy.attribute.{r['feature']}", severity="warning" if leaks else "info",
        metric="advantage_members", value=m["advantage"], threshold=0.0, passed=not leaks,
        threat="privacy", scenario=r["id"], threat_tag=th,
        why=(f"{METHOD_NAMES[r['judged']]} infers {r['feature']!r} of training members with "
             f"accuracy {_p(m['accuracy'])} against {_p(m['baseline_accuracy'])} for the marginal "
             f"baseline: advantage {m['advantage']:+.3f} (95 % {lo:+.3f} to {hi:+.3f}); on "
             f"non-members {non['advantage']:+.3f}"),
        fix=("drop or coarsen the sensitive feature, regularise (the advantage grows with "
             "overfitting) or train with DP-SGD" if leaks else "none needed"))
    fig = {"attack": f"attribute:{r['feature']}", "advantage": m["advantage"], "judged": True,
           "vulnerable": leaks, "text": f"attribute inference of {r['feature']}: advantage "
                                        f"{m['advantage']:+.3f} on members (95 % lower bound "
                                        f"{lo:+.3f})"}
    return f, fig


def add_to(report: Report, records: list[dict]) -> None:
    figures, findings = [], []
    for r in records:
        if r["kind"] == "inversion":
            f, fig = _inversion(report, r)
            findings.append(f)
            figures.append(fig)
    attrs = [r for r in records if r["kind"] == "attribute"]
    if attrs:
        first = attrs[0]
        text = ("For each sensitive feature the adversary knows a record's other features and "
                "its label, queries the model with every value of the feature and picks the "
                "value that best explains the label (Fredrikson et al. 2014: prior times the "
                "model's probability of the label, or its confusion-matrix entry on a labels-only "
                "model; Yeom et al. 2018: the lowest loss). The baseline guesses the most common "
                "value of the training split's marginal. Records: the privacy split's "
                f"{first['methods'][first['judged']]['members']['n']} training members and as "
                "many non-members; advantage = attack accuracy - baseline accuracy on the same "
                f"records (paired 95 % interval, Newcombe 1998 method 10). Model answers used: "
                f"{first['used']}.")
        report.sections.append(Section(
            title="Privacy: attribute inference", text=text,
            tables=[Table(columns=["feature", "method", "records", "attack accuracy",
                                   "baseline accuracy", "advantage", "advantage 95 %"],
                          rows=[row for r in attrs for row in _attribute_rows(r)])]))
        for r in attrs:
            f, fig = _attribute(r)
            findings.append(f)
            figures.append(fig)
    if not findings:
        return
    report.findings += findings
    vulnerable = any(f["vulnerable"] for f in figures)
    old = next((v for v in report.verdicts if v.threat == "privacy"), None)
    if old is not None:
        old.figures += figures
        if vulnerable and old.status != "vulnerable":
            old.status = "vulnerable"
            old.reason = "the model can be inverted: its answers reveal training data"
        elif not vulnerable and old.status == "not assessed":
            old.status = "robust"
            old.reason = f"no tested inversion beat its baseline; membership: {old.reason}"
        elif not vulnerable and old.status == "robust":
            old.reason += "; no tested inversion beat its baseline either"
        old.rule["text"] = f"{old.rule.get('text', '')}; or {RULE}"
        return
    report.verdicts.append(Verdict(
        threat="privacy", status="vulnerable" if vulnerable else "robust", figures=figures,
        rule={"text": f"vulnerable {RULE}"},
        reason=("the model can be inverted: its answers reveal training data" if vulnerable else
                "no tested inversion beat its baseline")))
