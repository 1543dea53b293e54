"""Membership leakage on slices of the scored points: per true class, and on the points the target
misclassifies against those it classifies correctly.

An attack's leakage over a whole population can hide subgroups that leak far more (Kulynych,
Yaghini, Cherubin, Veale & Troncoso 2022, "Disparate Vulnerability to Membership Inference
Attacks", PoPETs; Carlini et al. 2022, "Membership Inference Attacks From First Principles", IEEE
S&P, on outliers). Each slice is measured two ways:

- **restricted** (the same definitions as the whole, ``advkit.evaluation.privacy``, on the slice's
  members and non-members only): ROC AUC, membership advantage, and the TPR at a fixed FPR with
  its Clopper-Pearson interval, the threshold fixed on the slice's own non-members. A slice with
  fewer than ``1 / fpr`` non-members cannot resolve that FPR (``resolvable`` False: the threshold
  then admits no false positive and the TPR is not comparable).
- **at the attack's threshold** (Kulynych et al.'s subgroup vulnerability of one fixed attack):
  the threshold the whole population fixes for that FPR, and the slice's TPR and FPR there, each a
  binomial count with its Clopper-Pearson interval. This resolves on small slices too; the slice's
  advantage there is ``TPR - FPR``.

A slice with fewer than ``min_points`` members or non-members gets no figure: it is marked
``too_few`` with its two counts. Intervals are per slice and per proportion (95 % each), not
corrected for the number of slices compared.
"""

from __future__ import annotations

import math

import numpy as np

from advkit.errors import InvalidParameterError, check_range
from advkit.evaluation.privacy import (
    _scores,
    clopper_pearson,
    membership_advantage,
    roc_auc,
    tpr_at_fpr,
)

MIN_POINTS = 10  # members and non-members a slice needs for a figure
SLICE_FPR = 0.01


def _share(k: int, n: int, confidence: float) -> dict:
    lo, hi = clopper_pearson(k, n, confidence)
    return {"k": int(k), "n": int(n), "value": k / n, "ci_low": float(lo), "ci_high": float(hi),
            "confidence": confidence}


def at_threshold(member_scores, nonmember_scores, threshold: float, *,
                 confidence: float = 0.95) -> dict:
    """TPR and FPR (each with its Clopper-Pearson interval) of the rule ``score >= threshold``."""
    m, n = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    return {"threshold": threshold if math.isfinite(threshold) else "inf",
            "tpr": _share(int((m >= threshold).sum()), m.size, confidence),
            "fpr": _share(int((n >= threshold).sum()), n.size, confidence)}


def slice_metrics(member_scores, nonmember_scores, threshold: float, *, fpr: float = SLICE_FPR,
                  min_points: int = MIN_POINTS, confidence: float = 0.95) -> dict:
    """One slice as plain data (see the module docstring); ``threshold``: the whole's. Only the
    counts and ``too_few`` True when it has fewer than ``min_points`` members or non-members."""
    m, n = np.asarray(member_scores, np.float64), np.asarray(nonmember_scores, np.float64)
    out = {"n_members": int(m.size), "n_nonmembers": int(n.size)}
    if m.size < min_points or n.size < min_points:
        return {**out, "too_few": True}
    t = tpr_at_fpr(m, n, fpr, confidence=confidence)
    return {**out, "too_few": False, "auc": roc_auc(m, n),
            "advantage": membership_advantage(m, n), "tpr_at_fpr": {str(float(fpr)): t.to_dict()},
            "at_threshold": at_threshold(m, n, threshold, confidence=confidence)}


def _vector(name: str, v, n: int, *, kind) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    a = np.asarray(v)
    if a.shape != (n,):
        raise InvalidParameterError(name, f"array of shape {a.shape}",
                                    f"one value per scored point: shape ({n},)")
    return a.astype(kind)


def membership_slices(scores, is_member, labels, correct, *, class_names=(),
                      fpr: float = SLICE_FPR, min_points: int = MIN_POINTS,
                      confidence: float = 0.95) -> dict:
    """Leakage per true class and on the misclassified and correctly classified points.

    ``scores`` (N,): one attack's membership scores (higher: more likely a member);
    ``is_member`` (N,) bool; ``labels`` (N,) the true classes; ``correct`` (N,) bool, whether
    the target classifies the point correctly; ``class_names``: names by class index (optional).
    Returns ``{"fpr", "min_points", "whole", "classes": [{"class", "name", **slice}],
    "misclassified", "correct"}``: ``whole`` is the whole population at its own threshold
    (``at_threshold``), each slice as :func:`slice_metrics` gives it; classes are those present
    among the scored points, in index order.
    """
    check_range("fpr", fpr, lo=0, hi=1, lo_open=True, hi_open=True)
    check_range("min_points", min_points, lo=1, kind=int)
    s = _scores("scores", scores)
    n = s.size
    member = _vector("is_member", is_member, n, kind=bool)
    y = _vector("labels", labels, n, kind=np.int64)
    ok = _vector("correct", correct, n, kind=bool)
    if y.min() < 0:
        raise InvalidParameterError("labels", f"a label {int(y.min())}", "class indices >= 0")
    if member.all() or not member.any():
        raise InvalidParameterError("is_member", f"{int(member.sum())} members of {n} points",
                                    "both members and non-members")
    whole = tpr_at_fpr(s[member], s[~member], fpr, confidence=confidence)

    def part(mask: np.ndarray) -> dict:
        return slice_metrics(s[mask & member], s[mask & ~member], whole.threshold, fpr=fpr,
                             min_points=min_points, confidence=confidence)

    classes = []
    for c in np.unique(y).tolist():
        name = str(class_names[c]) if c < len(class_names) else str(c)
        classes.append({"class": int(c), "name": name, **part(y == c)})
    return {"fpr": float(fpr), "min_points": int(min_points),
            "whole": at_threshold(s[member], s[~member], whole.threshold, confidence=confidence),
            "classes": classes, "misclassified": part(~ok), "correct": part(ok)}
