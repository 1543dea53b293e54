"""The backdoor family's part of the report, built from its stored records only (no model runs):
scenario results, sections (Neural Cleanse's per-class norms and reversed triggers, the
mitigations, the training-data sanitisers), findings and the backdoor verdict.

The verdict follows Neural Cleanse (Wang et al. 2019): vulnerable when it flags a class (reversed
trigger's L1 norm below the median and MAD anomaly index above the threshold, 2 by default);
inconclusive when it flags none but some class's search never reached its success threshold or
diverged, or when only the training data was screened; robust when every class was reversed and
none is anomalous. A sanitiser alone never makes the verdict: activation clustering and spectral
signatures flag samples in clean data too, so their counts mean little without ground truth.
"""

from __future__ import annotations

import numpy as np

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
from advkit.evaluation.metrics import Proportion, proportion_of

RESIDUAL = 0.05  # a mitigation removes the backdoor when the trigger succeeds on at most this
MAX_DROP = 0.02  # ... at a clean-accuracy cost of at most this
MIN_RECALL = 0.9
NAMES = {"backdoor/neural-cleanse/unlearn": "Neural Cleanse unlearning",
         "backdoor/neural-cleanse/prune": "Neural Cleanse pruning",
         "backdoor/activation-clustering": "activation clustering",
         "backdoor/spectral": "spectral signatures", "backdoor/spectre": "SPECTRE",
         "backdoor/label-consistency": "label consistency"}


def _p(pair) -> Proportion | None:
    return proportion_of(*pair) if pair and pair[1] else None


def _name(rec: dict) -> str:
    if rec["kind"] == "retrain":
        name = NAMES[rec["id"].replace("retrain/", "")]
        return f"retraining without {name}{chr(39) if name.endswith('s') else chr(39) + 's'} flags"
    return NAMES.get(rec["id"], rec["id"])


def model_metrics(m: dict) -> dict:
    """Clean accuracy, the worst reversed-trigger success over flagged classes, and (with known
    poisoned indices) the poisoned training inputs sent to their poisoned label."""
    rev = [_p(v) for v in m.get("reversed_trigger", {}).values()]
    return {"clean_accuracy": _p(m["clean"]),
            "reversed_trigger_success": max(rev, key=lambda p: p.value) if rev else None,
            "poisoned_to_label": _p(m.get("poisoned_to_label"))}


def _smallest(nc: dict) -> int | None:
    norms = [np.inf if v is None else v for v in nc["mask_norm"]]
    return int(np.argmin(norms)) if np.isfinite(min(norms)) else None


def scenario_result(rec: dict) -> ScenarioResult:
    kind, per = rec["kind"], {}
    if kind == "neural-cleanse":
        small = _smallest(rec)
        metrics = {"n_flagged": len(rec["flagged"]), "smallest_trigger_class": small,
                   "smallest_trigger_anomaly_index": None if small is None
                   else rec["anomaly_index"][small], **model_metrics(rec["model"])}
        per = {k: rec[k] for k in ("mask_norm", "anomaly_index", "flagged", "reached", "failed")}
        params, kind_name = rec["params"]["params"], "backdoor detection"
    elif kind == "sanitiser":
        metrics = {"flagged": len(rec["flagged"]), **_detection(rec)}
        per = {"flagged": rec["flagged"], "flagged_classes": rec["flagged_classes"]}
        params, kind_name = rec["params"]["params"], "data sanitiser"
    else:
        metrics = {} if "skipped" in rec else model_metrics(rec["model"])
        params = {k: v for k, v in rec["params"].items() if k != "clean_samples"}
        kind_name = "backdoor mitigation"
    defense = "neural_cleanse" if kind == "neural-cleanse" else _name(rec)
    return ScenarioResult(id=rec["id"], kind=kind_name, attack="backdoor", defense=defense,
                          params=params, metrics=metrics,
                          seconds=rec["seconds"], per_sample=per,
                          from_store=bool(rec.get("from_store")))


def _detection(rec: dict) -> dict:
    if "n_poisoned" not in rec:
        return {}
    return {"precision": _p([rec["true_positives"], len(rec["flagged"])]),
            "recall": _p([rec["true_positives"], rec["n_poisoned"]]),
            "precision_by_chance": rec["n_poisoned"] / rec["n"]}


def _img(a, bounds=(0.0, 1.0)) -> np.ndarray:
    """(C, H, W) or (H, W) values within ``bounds`` as an image array in [0, 1]."""
    a = np.asarray(a, dtype=np.float64)
    lo, hi = bounds
    a = np.clip((a - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    return a


def _norm(v) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def _fmt(p: Proportion | None) -> str:
    return "n/a" if p is None else f"{p.value:.3f} ({p.k}/{p.n})"


# -- sections ------------------------------------------------------------------------------------
def nc_sections(nc: dict, example, *, model: str = "the model", where: str = "the dataset's "
                "training split", title: str = "Backdoor") -> list[Section]:
    """Neural Cleanse's per-class table and plot, and its reversed triggers (each class's, and
    the flagged or smallest stamped on ``example[0]``), from its record (``nc_record``)."""
    k, lo_hi = nc["classes"], tuple(nc["bounds"])
    rows = [[c, nc["mask_norm"][c], nc["anomaly_index"][c], c in nc["flagged"], nc["reached"][c],
             nc["success"][c]] for c in range(k)]
    table = Section(
        title=f"{title}: Neural Cleanse on {model}",
        text=(f"Neural Cleanse (Wang et al. 2019) searched, on {nc['n_clean']} clean points of "
              f"{where}, the smallest trigger (mask L1 norm) that sends "
              "inputs of other classes to each class. A backdoor target needs a far smaller one: "
              "a class is flagged when its norm is below the median and its MAD anomaly index "
              f"(|norm - median| / (1.4826 MAD)) exceeds {nc['threshold']:g}. "
              + " ".join(nc["notes"])),
        tables=[Table(columns=["class", "mask L1", "anomaly index", "flagged",
                               "reached success threshold", "last trigger success"], rows=rows)],
        plots=[Plot(title="MAD anomaly index per class", xlabel="class", ylabel="anomaly index",
                    kind="bar", series=[Series("anomaly index", list(range(k)),
                                               [v if v is not None else float("nan")
                                                for v in nc["anomaly_index"]])])])
    imgs = []
    for c in range(k):
        mask, pat = np.asarray(nc["masks"][c]), np.asarray(nc["patterns"][c])
        imgs.append(Image(f"class {c}{' FLAGGED' if c in nc['flagged'] else ''}, L1 "
                          f"{_norm(nc['mask_norm'][c])}",
                          _img(mask * (pat - lo_hi[0]) + lo_hi[0], lo_hi), "reversed triggers"))
    shown = nc["flagged"] or ([_smallest(nc)] if _smallest(nc) is not None else [])
    if example is not None and len(example):
        x0 = example[0].detach().cpu().numpy()
        imgs.append(Image("an evaluation point", _img(x0, lo_hi), "stamped"))
        for c in shown:
            m, p = np.asarray(nc["masks"][c]), np.asarray(nc["patterns"][c])
            imgs.append(Image(f"with class {c}'s reversed trigger", _img((1 - m) * x0 + m * p,
                                                                         lo_hi), "stamped"))
    trig = Section(title=f"{title}: reversed triggers of {model}", images=imgs,
                   image_columns=min(k, 10),
                   text="Each class's reversed trigger (mask times pattern)"
                        + (" and the flagged (or smallest) one stamped on an evaluation point"
                           if example is not None and len(example) else "")
                        + ". A real backdoor's trigger "
                        "shows as a small, compact patch; the other classes' masks are large and "
                        "diffuse.")
    return [table, trig]


def _by_class(m: dict) -> str:
    """Each flagged class's reversed-trigger success when there are several (the table's column
    holds the worst)."""
    rev = m.get("reversed_trigger", {})
    if len(rev) < 2:
        return ""
    return "reversed-trigger success by class: " + ", ".join(
        f"{c}: {_fmt(_p(v))}" for c, v in rev.items())


def _mitigation_section(records: list[dict], notes: list[str]) -> Section | None:
    base = next((r for r in records if r["kind"] == "neural-cleanse"), None)
    rows, b = [], model_metrics(base["model"]) if base else None
    if base:
        rows.append(["audited model", _p(base["model"]["clean"]), b["reversed_trigger_success"],
                     b["poisoned_to_label"], None, None, _by_class(base["model"])])
    for r in records:
        if r["kind"] not in ("mitigation", "retrain"):
            continue
        if "skipped" in r:
            rows.append([_name(r), None, None, None, None, r["seconds"], r["skipped"]])
            continue
        m = model_metrics(r["model"])
        drop = (b["clean_accuracy"].value - m["clean_accuracy"].value) if b else None
        note = (f"{r['removed']} samples removed, {r['n_train']} kept"
                + (f" ({r['poisoned_kept']} known poisoned kept)" if "poisoned_kept" in r else "")
                if r["kind"] == "retrain" else
                f"{len(r.get('pruned_channels', []))} channels of {r['pruned_layer']} silenced"
                if "pruned_layer" in r else "")
        rows.append([_name(r), m["clean_accuracy"], m["reversed_trigger_success"],
                     m["poisoned_to_label"], drop, r["seconds"],
                     "; ".join(t for t in (note, _by_class(r["model"])) if t)])
    if len(rows) <= 1 and not notes:
        return None
    return Section(
        title="Backdoor: mitigations",
        text=("Each model on the evaluation points: clean accuracy; success of Neural Cleanse's "
              "reversed trigger of the flagged class on points of other classes (after unlearning "
              "it is optimistic: unlearning trained on that very trigger); and, with known "
              "poisoned indices, the share of the poisoned training inputs (the real trigger) "
              "sent to their poisoned label (the audited and mitigated models saw them in "
              "training, a retrained model those its sanitiser missed). " + " ".join(notes)),
        tables=[Table(columns=["model", "clean accuracy", "reversed-trigger success (worst)",
                               "known poisoned inputs to their label", "clean-accuracy drop",
                               "time (s)", "note"], rows=rows)])


def _sanitiser_section(records: list[dict], data_file: str | None) -> Section | None:
    rows = []
    for r in records:
        if r["kind"] != "sanitiser":
            continue
        d = _detection(r)
        rows.append([_name(r), len(r["flagged"]), r["n"], d.get("precision"), d.get("recall"),
                     d.get("precision_by_chance"), r["flagged_classes"]])
    if not rows:
        return None
    return Section(
        title="Backdoor: training-data sanitisers",
        text=(f"The model's training data ({data_file}) seen through its last hidden layer. "
              "Activation clustering (Chen et al. 2018) splits each class's activations in two "
              "and flags a small cluster; spectral signatures (Tran et al. 2018) flag each "
              "class's samples with the largest projection on the top singular vector; label "
              "consistency flags the samples whose label a model trained on the clean data "
              "rejects, in the classes where that happens significantly more often than on "
              "held-out clean data (it finds dirty-label poison only). Precision "
              "and recall are against the poisoned indices the spec gave (95 % Wilson "
              "intervals); precision by chance is the poisoned share of the data. The "
              "activation-based ones assume the poison is a minority of its class: when it is "
              "half of the target class (an all-to-one attack on 10 % of a 10-class set) they "
              "separate it poorly."),
        tables=[Table(columns=["sanitiser", "flagged", "samples", "precision", "recall",
                               "precision by chance", "classes flagged"], rows=rows)])


# -- findings and verdict ------------------------------------------------------------------------
def _findings(records: list[dict]) -> list[Finding]:
    out = []
    for r in records:
        if r["kind"] == "neural-cleanse":
            for c in r["flagged"]:
                out.append(Finding(
                    check="backdoor.neural_cleanse.flagged_class", severity="critical",
                    metric="anomaly_index", value=r["anomaly_index"][c], threshold=r["threshold"],
                    threat="backdoor", scenario=r["id"],
                    why=f"class {c} needs a trigger of L1 {r['mask_norm'][c]:.3g}, far smaller "
                        "than the other classes': the model likely has a backdoor to it",
                    fix="do not deploy; retrain on vetted data, or apply the mitigations "
                        "(unlearning, pruning) and re-audit"))
            bad = [c for c in range(r["classes"]) if not r["reached"][c]]
            if not r["flagged"]:
                out.append(Finding(
                    check="backdoor.neural_cleanse.flagged_class", severity="info",
                    metric="n_flagged", value=0.0, threshold=0.0, threat="backdoor",
                    scenario=r["id"], passed=not bad,
                    why="Neural Cleanse found no class with an anomalously small trigger",
                    fix="none needed"))
            if bad:
                out.append(Finding(
                    check="backdoor.neural_cleanse.converged", severity="warning",
                    metric="classes_not_reached", value=float(len(bad)), threshold=0.0,
                    threat="backdoor", scenario=r["id"],
                    why=f"the trigger search for classes {bad} never reached its success "
                        "threshold, so their norms overstate the smallest trigger",
                    fix="raise backdoor.neural_cleanse.epochs"))
        elif r["kind"] in ("mitigation", "retrain") and "skipped" not in r:
            m = model_metrics(r["model"])
            measured = [p for p in (m["reversed_trigger_success"], m["poisoned_to_label"]) if p]
            if not measured:
                continue
            s = max(measured, key=lambda p: p.value)  # removed only if both triggers fail
            removed = s.value <= RESIDUAL
            out.append(Finding(
                check=f"backdoor.{'retrain' if r['kind'] == 'retrain' else 'mitigation'}."
                      f"{r['id'].split('/')[-1]}",
                severity="info" if removed else "warning", metric="trigger_success",
                value=s.value, threshold=RESIDUAL, threat="backdoor", scenario=r["id"],
                passed=removed, why=f"after {_name(r)} the backdoor trigger (the worse of "
                "the reversed one and, with known poisoned samples, the real one) succeeds on "
                f"{s.value:.1%} of the inputs it is stamped on (clean accuracy "
                f"{m['clean_accuracy'].value:.1%})",
                fix="none needed" if removed else "do not rely on this mitigation alone"))
        elif r["kind"] == "sanitiser" and "n_poisoned" in r:
            d = _detection(r)
            rec_ = d["recall"]
            if rec_ is None:
                continue
            out.append(Finding(
                check=f"backdoor.sanitiser.{r['id'].split('/')[-1]}.recall",
                severity="info" if rec_.value >= MIN_RECALL else "warning", metric="recall",
                value=rec_.value, threshold=MIN_RECALL, threat="backdoor", scenario=r["id"],
                passed=rec_.value >= MIN_RECALL,
                why=f"{_name(r)} finds {rec_.value:.1%} of the known poisoned samples "
                    f"(precision {_fmt(d['precision'])}; by chance {d['precision_by_chance']:.3f})",
                fix="combine training-set screening with model checks (Neural Cleanse)"))
    return out


def _verdict(records: list[dict]) -> Verdict:
    nc = next((r for r in records if r["kind"] == "neural-cleanse"), None)
    figures = []
    if nc is not None:
        for c in nc["flagged"] or [c for c in [_smallest(nc)] if c is not None]:
            ai = nc["anomaly_index"][c]
            figures.append({"text": f"class {c}: reversed trigger L1 {nc['mask_norm'][c]:.3g}, "
                                    f"anomaly index {'inf' if ai is None else f'{ai:.2f}'} "
                                    f"(flagged above {nc['threshold']:g})",
                            "judged": True, "vulnerable": c in nc["flagged"]})
    for r in records:
        if r["kind"] == "sanitiser":
            d = _detection(r)
            figures.append({"text": f"{_name(r)}: {len(r['flagged'])} of {r['n']} training "
                                    "samples flagged" + (f"; precision {_fmt(d['precision'])}, "
                                                         f"recall {_fmt(d['recall'])}" if d else "")})
        elif r["kind"] in ("mitigation", "retrain") and "skipped" not in r:
            m = model_metrics(r["model"])
            figures.append({"text": f"{_name(r)}: clean accuracy {_fmt(m['clean_accuracy'])}, "
                                    f"reversed-trigger success "
                                    f"{_fmt(m['reversed_trigger_success'])}"})
    if nc is None:
        status, reason = "inconclusive", ("only the training data was screened; Neural Cleanse "
                                          "(the check of the model itself) was off")
    elif nc["flagged"]:
        status = "vulnerable"
        reason = (f"Neural Cleanse found a trigger anomalously smaller than the others' for "
                  f"class(es) {nc['flagged']}: the model likely carries a backdoor to them")
    elif not all(nc["reached"]) or nc["failed"]:
        status = "inconclusive"
        reason = "Neural Cleanse flagged no class, but its search did not converge for every class"
    else:
        status, reason = "robust", "Neural Cleanse found no class with an anomalously small trigger"
    return Verdict(threat="backdoor", status=status, figures=figures, reason=reason, rule={
        "text": "vulnerable when Neural Cleanse flags a class (reversed-trigger L1 norm below the "
                "median, MAD anomaly index above the threshold; Wang et al. 2019); inconclusive "
                "when it flags none but some class's search did not converge, or when only the "
                "training data was screened"})


def add_backdoor_sections(report: Report, records: list[dict], *, example, notes: list[str],
                          data_file: str | None, tag=None) -> None:
    """Add the backdoor sections, findings and verdict to ``report`` (records only)."""
    nc = next((r for r in records if r["kind"] == "neural-cleanse"), None)
    if nc is not None:
        report.sections.extend(nc_sections(nc, example))
    for s in (_mitigation_section(records, notes), _sanitiser_section(records, data_file)):
        if s is not None:
            report.sections.append(s)
    found = _findings(records) + [Finding(
        check="backdoor.retrain", severity="info", metric="", value=None, threshold=None,
        threat="backdoor", skipped=True, why=n, fix="retrain with your own recipe") for n in notes]
    for f in found:
        f.threat_tag = tag
    report.findings.extend(found)
    report.verdicts.append(_verdict(records))
