"""Membership leakage per class and on the misclassified slice, in the report: built from the
``slices`` of each membership record (``advkit.evaluation.privacy_slices``).

One table per attack (collapsed in HTML): a row per true class, then the misclassified and the
correctly classified points, each with its members and non-members, ROC AUC and advantage on the
slice, the TPR at 1 % FPR with the threshold fixed on the slice's own non-members (only where
they resolve 1 %), and the TPR and FPR at the attack's own 1 %-FPR threshold (the whole's), each
with its 95 % Clopper-Pearson interval. A slice with too few members or non-members reads "too
few points", never a figure.

Rule (one warning finding per attack, only when it fires): a class, or the misclassified slice,
leaks much more than the whole when, at the attack's threshold, the slice's advantage taken
pessimistically (the lower end of its TPR's interval minus the upper end of its FPR's) is above
the whole's advantage there (TPR - FPR, point estimates): its members are found more often than
the whole's while its non-members are not accused more often (Kulynych et al. 2022's subgroup
vulnerability). The intervals are per slice, not corrected for the number of slices.
"""

from __future__ import annotations

import math

from advkit.audit.report import Finding, Table
from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import tag

TOO_FEW = "too few points"
COLUMNS = ["slice", "members", "non-members", "ROC AUC", "advantage",
           "TPR at 1 % FPR (slice's threshold)", "TPR at the attack's threshold",
           "FPR at the attack's threshold"]


def _share(d: dict) -> Proportion:
    return Proportion(int(d["k"]), int(d["n"]), d["ci_low"], d["ci_high"],
                      d.get("confidence", 0.95))


def _own_tpr(s: dict, fpr: float):
    t = s["tpr_at_fpr"][str(fpr)]
    if not t["resolvable"]:
        return f"not resolvable (< {math.ceil(1 / fpr - 1e-9)} non-members)"
    return Proportion(int(t["tp"]), int(t["n_members"]), t["ci_low"], t["ci_high"],
                      t.get("confidence", 0.95))


def _row(name: str, s: dict, fpr: float) -> list:
    if s["too_few"]:
        return [name, s["n_members"], s["n_nonmembers"], TOO_FEW] + [None] * 4
    at = s["at_threshold"]
    return [name, s["n_members"], s["n_nonmembers"], s["auc"], s["advantage"],
            _own_tpr(s, fpr), _share(at["tpr"]), _share(at["fpr"])]


def slices(sl: dict) -> list[tuple[str, dict]]:
    """(display name, slice) of every slice: the classes, misclassified, correctly classified."""
    out = [(f"class {c['class']}" + (f" ({c['name']})" if c["name"] != str(c["class"]) else ""),
            c) for c in sl["classes"]]
    return out + [("misclassified", sl["misclassified"]),
                  ("correctly classified", sl["correct"])]


def hot(sl: dict) -> list[tuple[str, Proportion, Proportion]]:
    """(name, TPR, FPR at the attack's threshold) of each class or the misclassified slice that
    leaks much more than the whole, by the module's rule."""
    whole = sl["whole"]
    base = whole["tpr"]["value"] - whole["fpr"]["value"]
    out = []
    for name, s in slices(sl)[:-1]:  # the correctly classified points are the contrast
        if s["too_few"]:
            continue
        tpr, fpr = _share(s["at_threshold"]["tpr"]), _share(s["at_threshold"]["fpr"])
        if tpr.lo - fpr.hi > base:
            out.append((name, tpr, fpr))
    return out


def tables(records: list[dict]) -> list[Table]:
    out = []
    for r in records:
        sl = r.get("slices")
        if not sl:  # a record stored before slices existed
            continue
        out.append(Table(
            columns=COLUMNS, rows=[_row(n, s, sl["fpr"]) for n, s in slices(sl)],
            title=f"{_what(r)}: leakage per class and on the misclassified points (fewer than "
                  f"{sl['min_points']} members or non-members: {TOO_FEW})", collapsed=True))
    return out


def _what(r: dict) -> str:
    return r["label"] if r["headline"] == r["attack"] else f"{r['label']} ({r['headline']})"


def findings(records: list[dict], knowledge: dict[str, str]) -> list[Finding]:
    out = []
    for r in records:
        sl = r.get("slices")
        found = hot(sl) if sl else []
        if not found:
            continue
        whole = sl["whole"]
        worst = max(found, key=lambda h: h[1].lo - h[2].hi)
        listed = "; ".join(f"{n}: TPR {t.value:.1%} ({t.lo:.1%} to {t.hi:.1%}, {t.n} members), "
                           f"FPR {f.value:.1%} ({f.lo:.1%} to {f.hi:.1%})" for n, t, f in found)
        out.append(Finding(
            check=f"privacy.membership.{r['label']}.slices", severity="warning",
            metric="tpr_at_attack_threshold", value=worst[1].value,
            threshold=whole["tpr"]["value"], passed=False, threat="privacy", scenario=r["id"],
            threat_tag=tag("AML.T0024.000", knowledge.get(r["attack"], "black box")),
            why=(f"{_what(r)} at its {sl['fpr']:.0%}-FPR threshold finds "
                 f"{whole['tpr']['value']:.1%} of all members (FPR {whole['fpr']['value']:.1%}) "
                 f"but far more of some slices ({listed}; 95 % intervals): these leak "
                 "membership more than the model as a whole"),
            fix=("collect more training data for these slices or regularise (weight decay, "
                 "early stopping, DP-SGD); check them for outliers and mislabelled points")))
    return out
