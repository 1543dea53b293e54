"""The poisoning family's part of the report, built from its stored records only.

Scenario results (one per stage), a table of clean accuracy and attack success per attack and
rate beside the clean reference model, curves of both against the poisoning rate, a table per
mitigation kind, findings and the poisoning verdict. Rules (module constants): a backdoor or
targeted flip is implanted when it succeeds on at least ``IMPLANTED`` more of the points it
targets than its trigger does on the clean reference model; random label noise matters when it
costs more than ``FLIP_DROP`` of clean accuracy; a mitigation works when the success left is at
most ``RESIDUAL`` at a clean-accuracy cost of at most ``MAX_DROP`` (against the poisoned model).
"""

from __future__ import annotations

import statistics

from advkit import registry
from advkit.audit.report import (
    Finding,
    Image,
    Plot,
    Report,
    ScenarioResult,
    Section,
    Series,
    Table,
    Verdict,
)
from advkit.evaluation.metrics import Proportion

IMPLANTED = 0.2
FLIP_DROP = 0.05
RESIDUAL = 0.05
MAX_DROP = 0.02
SUCCESS = {"backdoor_success": "triggered test points (true class not the target) classified as "
                               "the target / those points",
           "targeted_flip_success": "test points of the source class classified as the target / "
                                    "those points"}


def _prop(d: dict | None) -> Proportion | None:
    if d is None:
        return None
    nan = float("nan")
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return Proportion(int(d["k"]), int(d["n"]), nan if lo is None else lo,
                      nan if hi is None else hi)


def _rate(rec: dict) -> float:
    return float(rec["params"].get("rate", 0.0))


def _before(r: dict, measured: dict) -> Proportion | None:
    """A mitigation's model before it: measured on the same points (STRIP's subset) when the
    record says, else the attack's measure stage."""
    und = r.get("details", {}).get("undefended")
    return _prop(und["clean_accuracy"]) if und else measured.get(_base(r))


def _points(a: Proportion | None, b: Proportion | None) -> float | None:
    """a - b in percentage points (None when either is missing or empty)."""
    if a is None or b is None or not a.n or not b.n:
        return None
    return 100 * (a.value - b.value)


def _key(rec: dict) -> str:
    """A mitigation record's entry name (its label, else the mitigation's name)."""
    return rec.get("mitigation_key") or rec["mitigation"]


def _where(rec: dict) -> str:
    return "the clean model" if rec["attack"] == "none" else f"{rec['label']} at rate {_rate(rec):g}"


def _by_kind(records: list[dict]) -> tuple[dict, list[dict], list[dict], dict]:
    clean = next((r for r in records if r["kind"] == "measure" and r["attack"] == "none"), None)
    measures = [r for r in records if r["kind"] == "measure" and r["attack"] != "none"]
    mitigations = [r for r in records if r["kind"] == "mitigation"]
    trains = {r["id"].rsplit("/", 1)[0]: r for r in records if r["kind"] == "train"}
    return clean, measures, mitigations, trains


def _base(rec: dict) -> str:
    return rec["id"].rsplit("/", 1)[0]


def results(records: list[dict]) -> list[ScenarioResult]:
    clean, _, _, _ = _by_kind(records)
    clean_acc = _prop(clean["clean_accuracy"]) if clean else None
    measured = {_base(r): _prop(r["clean_accuracy"]) for r in records if r["kind"] == "measure"}
    out = []
    for r in records:
        params = {"label": r["label"], **r["params"]}
        common = dict(id=r["id"], attack=r["attack"], params=params, seconds=r["seconds"],
                      from_store=bool(r.get("from_store")))
        if r["kind"] == "train":
            out.append(ScenarioResult(kind="poisoning_training", metrics={
                "rate": _rate(r), "n_train": r["n_train"], "n_poisoned": r["n_poisoned"],
                "train_accuracy": r["train_accuracy"]}, **common))
            continue
        acc = _prop(r["clean_accuracy"])
        metrics = {"rate": _rate(r), "clean_accuracy": acc,
                   "attack_success": _prop(r["attack_success"])}
        if r["kind"] == "measure":
            metrics["clean_accuracy_drop"] = _points(clean_acc, acc)
            out.append(ScenarioResult(kind="poisoning", metrics=metrics, **common))
            continue
        metrics["clean_accuracy_drop"] = _points(_before(r, measured), acc)
        d = r["details"]
        if "recall" in d:
            metrics.update(precision=_prop(d["precision"]), recall=_prop(d["recall"]),
                           n_flagged=d["n_flagged"])
        if "frr" in d:
            metrics.update(false_rejection=_prop(d["frr"]), false_acceptance=_prop(d["far"]))
        if "flagged_classes" in d and r["attack"] == "none":
            metrics["false_alarm"] = bool(d["flagged_classes"])
        if "flagged_classes" in d:
            metrics.update(n_flagged=len(d["flagged_classes"]),
                           target_flagged=d["target_flagged"])
        out.append(ScenarioResult(kind="poisoning", defense=_key(r), metrics=metrics,
                                  per_sample={k: v for k, v in d.items()
                                              if k in ("anomaly_index", "mask_norms")}, **common))
    return out


def _tag(attack: str):
    try:
        return registry.get(attack).threat
    except Exception:  # noqa: BLE001 - a tag is optional
        return None


def _attack_findings(clean, measures) -> tuple[list[Finding], list[dict]]:
    findings, figures = [], []
    clean_acc = _prop(clean["clean_accuracy"])
    for r in measures:
        acc, succ = _prop(r["clean_accuracy"]), _prop(r["attack_success"])
        base = _prop((clean.get("trigger_success", {}).get(r["label"]) or {}).get(
            "attack_success"))
        drop = _points(clean_acc, acc)
        where = f"{r['label']} at rate {_rate(r):g}"
        if succ is not None:
            natural = base.value if base is not None and base.n else 0.0
            limit = min(1.0, natural + IMPLANTED)
            bad = succ.value >= limit
            dest = "the attacker's label" if r["target"] is None else f"class {r['target']}"
            hidden = drop is None or drop <= 100 * FLIP_DROP
            findings.append(Finding(
                check=f"poisoning.{r['success_kind']}", severity="critical" if bad else "info",
                metric="attack_success", value=succ.value, threshold=limit, passed=not bad,
                threat="poisoning", scenario=r["id"], threat_tag=_tag(r["attack"]),
                why=f"{where}: {succ.value:.1%} of targeted test points reach {dest} (the clean "
                    f"model: {natural:.1%}); clean accuracy changes by "
                    f"{0.0 - (drop or 0.0):+.1f} points"
                    + (": the poison is invisible to accuracy testing" if bad and hidden else ""),
                fix="vet the provenance of training data; screen training sets (activation "
                    "clustering, spectral signatures) and models (Neural Cleanse) before use"
                    if bad else "none needed at this rate"))
        else:
            bad = drop is not None and drop > 100 * FLIP_DROP
            findings.append(Finding(
                check="poisoning.clean_accuracy_drop", severity="warning" if bad else "info",
                metric="clean_accuracy_drop", value=None if drop is None else drop / 100,
                threshold=FLIP_DROP, passed=not bad, threat="poisoning", scenario=r["id"],
                threat_tag=_tag(r["attack"]),
                why=f"{where} costs {drop or 0.0:.1f} points of clean accuracy against the clean "
                    "reference model",
                fix="clean noisy labels (confident learning) or train with a noise-robust loss"
                    if bad else "none needed at this rate"))
        shown = (f"attack success {succ}" if succ is not None
                 else f"clean-accuracy drop {drop or 0.0:.1f} points")
        figures.append({"attack": r["label"], "rate": _rate(r), "clean_accuracy": acc,
                        "attack_success": succ, "judged": True, "vulnerable": bad,
                        "text": f"{where}: {shown}, clean accuracy {acc}"})
    return findings, figures


def _false_alarm(r: dict) -> Finding:
    """Neural Cleanse against the clean reference model: a flagged class is a false alarm."""
    d = r["details"]
    fp = d["flagged_classes"]
    norms = [v for v in d["mask_norms"] if v is not None]
    median = statistics.median(norms) if norms else float("nan")
    # only a class with a smaller-than-median trigger can be flagged: its largest index
    small = [i for i, n in zip(d["anomaly_index"], d["mask_norms"], strict=True)
             if i is not None and n is not None and n < median]
    top = max(small) if small else float("nan")
    return Finding(
        check="poisoning.neural_cleanse.false_alarm", severity="warning" if fp else "info",
        metric="n_flagged", value=float(len(fp)), threshold=0.0, passed=not fp,
        threat="poisoning", scenario=r["id"], threat_tag=_tag(r["mitigation"]),
        why=(f"on the clean model (trained on unpoisoned data) Neural Cleanse flags class"
             f"{'es' if len(fp) > 1 else ''} {', '.join(map(str, fp))}: a false alarm"
             if fp else "on the clean model Neural Cleanse flags no class")
            + f" (largest anomaly index of a class with a smaller-than-median trigger "
              f"{top:.2f}, threshold {d['threshold']:g})",
        fix="confirm a flagged class by stamping its reversed trigger on clean data and "
            "checking the trigger looks like a patch, not a class feature" if fp else
            "none needed")


def _mitigation_findings(mitigations, measured) -> list[Finding]:
    out = []
    for r in mitigations:
        acc, succ = _prop(r["clean_accuracy"]), _prop(r["attack_success"])
        drop = _points(_before(r, measured), acc) or 0.0
        if r["attack"] == "none" and "flagged_classes" in r["details"]:
            out.append(_false_alarm(r))
            continue
        name, where = _key(r), _where(r)
        removed = succ is None or succ.value <= RESIDUAL
        costly = drop > 100 * MAX_DROP
        out.append(Finding(
            check=f"poisoning.mitigation.{name}", severity="info" if removed and not costly
            else "warning", metric="attack_success" if succ is not None else "clean_accuracy_drop",
            value=succ.value if succ is not None else drop / 100,
            threshold=RESIDUAL if succ is not None else MAX_DROP, threat="poisoning",
            scenario=r["id"], passed=removed and not costly, threat_tag=_tag(name),
            why=(f"after {name} ({where}) the attack still succeeds on {succ.value:.1%} of "
                 "targeted test points" if not removed else
                 f"{name} ({where}) " + (f"leaves {succ.value:.1%} attack success at "
                                          if succ is not None else "costs ")
                 + f"{drop:.1f} points of clean accuracy against "
                 + ("the same model before it" if r["attack"] == "none" else "the poisoned model")),
            fix="do not rely on this mitigation alone" if not removed else
                ("tune it on held-out clean data" if costly else "none needed")))
    return out


def _curves(clean, measures) -> list[Plot]:
    acc0 = _prop(clean["clean_accuracy"])
    by: dict[str, list[dict]] = {}
    for r in measures:
        by.setdefault(r["label"], []).append(r)
    plots = []
    for metric, title in (("attack_success", "Attack success against the poisoning rate"),
                          ("clean_accuracy", "Clean accuracy against the poisoning rate")):
        series = []
        for label, rs in by.items():
            pts = [(0.0, acc0)] if metric == "clean_accuracy" else []
            pts += [(_rate(r), _prop(r[metric])) for r in sorted(rs, key=_rate)]
            pts = [(x, p) for x, p in pts if p is not None and p.n]
            if pts:
                series.append(Series(label, [x for x, _ in pts], [p.value for _, p in pts],
                                     [p.lo for _, p in pts], [p.hi for _, p in pts]))
        if series:
            plots.append(Plot(title=title, xlabel="poisoning rate (share of training set)",
                              ylabel=metric.replace("_", " "), series=series, ylim=(0.0, 1.0)))
    return plots


def add_to(report: Report, records: list[dict]) -> None:
    clean, measures, mitigations, trains = _by_kind(records)
    if clean is None:
        return
    measured = {_base(r): _prop(r["clean_accuracy"]) for r in records if r["kind"] == "measure"}
    acc0 = _prop(clean["clean_accuracy"])
    rows = [["none (clean reference)", 0.0, 0, acc0, None, None, None]]
    for r in measures:
        base = (clean.get("trigger_success", {}).get(r["label"]) or {}).get("attack_success")
        rows.append([r["label"], _rate(r), trains[_base(r)]["n_poisoned"],
                     _prop(r["clean_accuracy"]), _points(acc0, _prop(r["clean_accuracy"])),
                     _prop(r["attack_success"]), _prop(base)])
    t = trains.get("poisoning/clean", {})
    text = (f"Each attack poisons its rate's share of the {t.get('n_train', '?')} training samples "
            f"kept from the defender ({t.get('n_defender', '?')} held out as clean data), the "
            f"recipe ({_recipe_text(t.get('recipe'))}) is trained on the result from the same seed "
            "as the clean reference, and both are measured on the same test points. Attack "
            "success: " + "; ".join(f"{k.replace('_', ' ')}: {v}" for k, v in SUCCESS.items())
            + "; random label flips have none (their effect is the clean-accuracy drop).")
    report.sections.append(Section(
        title="Poisoning: attacks", text=text, plots=_curves(clean, measures),
        tables=[Table(columns=["attack", "rate", "poisoned samples", "clean accuracy",
                               "clean-acc drop (points)", "attack success",
                               "trigger on the clean model"], rows=rows)]))
    if mitigations:
        _mitigation_section(report, mitigations, measured)
    findings, figures = _attack_findings(clean, measures)
    report.findings += findings + _mitigation_findings(mitigations, measured)
    vulnerable = any(f["vulnerable"] for f in figures)
    report.verdicts.append(Verdict(
        threat="poisoning", status="vulnerable" if vulnerable else "robust", figures=figures,
        rule={"implanted_at": IMPLANTED, "max_clean_accuracy_drop": FLIP_DROP,
              "text": "vulnerable when, at some tested rate, a backdoor or targeted flip "
                      f"succeeds on at least {IMPLANTED:g} more of the points it targets than "
                      "its trigger does on the clean model, or random label flips cost more "
                      f"than {FLIP_DROP * 100:g} points of clean accuracy"},
        reason="poisoning at a tested rate implants the attacker's behaviour" if vulnerable else
               "no tested poisoning rate implanted the attacker's behaviour"))


def _recipe_text(recipe: dict | None) -> str:
    if not recipe:
        return "?"
    sched = recipe["lr_schedule"]
    if recipe.get("lr_milestones"):
        sched += " x0.1 after epoch " + ", ".join(map(str, recipe["lr_milestones"]))
    return (f"{recipe['zoo']}, {recipe['epochs']} epochs, {recipe['optimizer']} lr "
            f"{recipe['lr']:g} ({sched}), batch {recipe['batch_size']}")


def _mitigation_section(report: Report, mitigations, measured) -> None:
    rows, det_rows, nc_rows, strip_rows = [], [], [], []
    for r in mitigations:
        acc = _prop(r["clean_accuracy"])
        rows.append([r["label"], _rate(r), _key(r), acc,
                     _points(_before(r, measured), acc), _prop(r["attack_success"])])
        d = r["details"]
        if "recall" in d:
            det_rows.append([r["label"], _rate(r), _key(r), d["n_flagged"],
                             _prop(d["precision"]), _prop(d["recall"]), d["poisoned_left"]])
        if "frr" in d:
            und = d["undefended"]
            strip_rows.append([r["label"], _rate(r), _key(r), d["n_eval"], _prop(d["frr"]),
                               _prop(d["far"]), _prop(und["attack_success"]),
                               _prop(r["attack_success"])])
        if "flagged_classes" in d:
            idx = d["anomaly_index"][r["target"]] if r["target"] is not None else None
            top = max((v for v in d["anomaly_index"] if v is not None), default=None)
            nc_rows.append([r["label"], _rate(r), _key(r), ", ".join(
                map(str, d["flagged_classes"])) or "none", d["target_flagged"], idx, top])
    tables = [Table(columns=["model (attack)", "rate", "mitigation", "clean accuracy",
                             "clean-acc drop vs before (points)", "attack success"], rows=rows)]
    if det_rows:
        tables.append(Table(title="Training-set detectors (then retrained without the flagged)",
                            columns=["attack", "rate", "detector", "flagged", "precision",
                                     "recall", "poisoned samples left"], rows=det_rows))
    if strip_rows:
        tables.append(Table(title="STRIP: a filter in front of the model (on the first test "
                                  "points; rejected inputs count as errors and failed attacks)",
                            columns=["model (attack)", "rate", "entry", "test points",
                                     "false rejection (clean)", "false acceptance (triggered)",
                                     "attack success without", "attack success behind STRIP"],
                            rows=strip_rows))
    if nc_rows:
        tables.append(Table(title="Neural Cleanse", columns=[
            "model (attack)", "rate", "entry", "flagged classes", "target flagged",
            "target's anomaly index", "largest anomaly index"], rows=nc_rows))
    notes = sorted({n for r in mitigations for n in r.get("notes", [])})
    report.sections.append(Section(
        title="Poisoning: mitigations",
        text="Each mitigation against each poisoned model (and, where the spec asks, against "
             "the clean reference model: there every flag is a false alarm and every lost point "
             "of accuracy is pure cost); the defender's clean data is the held-out share of the "
             "training split. The clean-accuracy drop is against the same model before the "
             "mitigation. " + " ".join(notes), tables=tables))
    report.sections.extend(_nc_model_sections(mitigations))


def _nc_model_sections(mitigations) -> list[Section]:
    """Neural Cleanse's per-class figures and reversed triggers for each model it searched
    (entries sharing one search shown once), the true trigger beside the poisoned model's."""
    from advkit.audit.backdoor_report import nc_sections

    out, seen = [], set()
    for r in mitigations:
        nc = r["details"].get("neural_cleanse")
        if nc is None or _base(r) in seen:
            continue
        seen.add(_base(r))
        secs = nc_sections(nc, None, model=_where(r).replace("at rate", "model at rate")
                           if r["attack"] != "none" else "the clean model",
                           where="the defender's held-out clean data", title="Poisoning")
        true = r["details"].get("true_trigger")
        if true is not None:
            from advkit.audit.backdoor_report import _img

            secs[-1].images.insert(0, Image(f"the attack's trigger (class {r['target']})",
                                            _img(true, tuple(nc["bounds"])), "true trigger"))
        out += secs
    return out

