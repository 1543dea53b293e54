"""Membership-inference metrics, as DESIGN §4 defines them.

Every function takes the attack's scores on members and on non-members (1-D, finite; a higher
score means "more likely a member") and thresholds them: a point is called a member when its score
is ``>= t``. Thresholds run over every distinct score (and +inf, which calls nobody a member).

- ROC curve and AUC. The AUC is the Mann-Whitney probability that a random member outscores a
  random non-member, ties counting one half.
- TPR at a fixed FPR (0.1 %, 1 %; Carlini et al. 2022, "Membership Inference Attacks From First
  Principles", IEEE S&P): the threshold is fixed on the non-members alone (the lowest
  non-member score whose empirical FPR is at most the target; member scores never move it), and
  the TPR at that threshold is a binomial count on the members, reported with a two-sided
  **Clopper-Pearson** (exact) interval (Clopper & Pearson 1934, Biometrika 26:404-413). With
  fewer than ``1/fpr`` non-members the target FPR is not resolvable: the threshold then admits
  no false positive at all and ``resolvable`` is False.
- Membership advantage ``max_t (TPR - FPR)`` (Yeom et al. 2018, CSF).
- The empirical ε lower bound of Jagielski, Ullman & Oprea (2020), "Auditing Differentially
  Private Machine Learning: How Private is Private SGD?", NeurIPS. (ε, δ)-DP forces, for every
  threshold, ``FPR + e^ε FNR >= 1 - δ`` and ``FNR + e^ε FPR >= 1 - δ``. With the Clopper-Pearson
  upper bounds ``FPR_hi`` and ``FNR_hi`` (two-sided interval at ``confidence``, as in the paper)

      ε_LB = max over t of max(log((1 - δ - FPR_hi) / FNR_hi), log((1 - δ - FNR_hi) / FPR_hi))

  floored at 0; it holds with the stated confidence for each threshold (the paper's
  convention; the max over thresholds is not corrected for multiple comparisons). The paper's
  game inserts one canary into many training runs; on population-level scores (many different
  examples, each in or out) the same number is a heuristic, not a certified audit, and a
  threshold below every member may bound ε through the second inequality alone (members never
  misclassified, some non-members misclassified).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from advkit.errors import InvalidParameterError, check_range

DEFAULT_FPRS = (0.001, 0.01)


def _scores(name: str, s) -> np.ndarray:
    if hasattr(s, "detach"):
        s = s.detach().cpu().numpy()
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise InvalidParameterError(
            name, f"array of shape {a.shape}",
            "a non-empty 1-D array of scores, one per point (flatten or select a column first)")
    if not np.all(np.isfinite(a)):
        bad = int(np.sum(~np.isfinite(a)))
        raise InvalidParameterError(
            name, f"{bad} NaN or infinite scores of {a.size}",
            "finite scores (check the model's outputs; clamp probabilities before taking logs)")
    return a


def _pair(members, nonmembers) -> tuple[np.ndarray, np.ndarray]:
    return _scores("member_scores", members), _scores("nonmember_scores", nonmembers)


def clopper_pearson(k, n: int, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper-Pearson interval for ``k`` (scalar or array) successes in ``n`` trials."""
    k = np.asarray(k, dtype=np.float64)
    a = (1.0 - confidence) / 2.0
    lo = np.where(k > 0, stats.beta.ppf(a, np.maximum(k, 1), n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - a, k + 1, np.maximum(n - k, 1)), 1.0)
    return lo, hi


def _counts(members: np.ndarray, nonmembers: np.ndarray):
    """Thresholds (descending, +inf first) and the member / non-member counts at or above each."""
    thr = np.concatenate([[np.inf], np.unique(np.concatenate([members, nonmembers]))[::-1]])
    sm, sn = np.sort(members), np.sort(nonmembers)
    tp = sm.size - np.searchsorted(sm, thr, side="left")
    fp = sn.size - np.searchsorted(sn, thr, side="left")
    return thr, tp, fp


@dataclass(frozen=True)
class RocCurve:
    """ROC points, from (0, 0) (threshold +inf) to (1, 1), with the threshold of each point."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    def to_dict(self) -> dict:
        return {"fpr": self.fpr.tolist(), "tpr": self.tpr.tolist(),
                "thresholds": [float(t) if math.isfinite(t) else "inf" for t in self.thresholds]}


def roc_curve(member_scores, nonmember_scores) -> RocCurve:
    m, n = _pair(member_scores, nonmember_scores)
    thr, tp, fp = _counts(m, n)
    return RocCurve(fp / n.size, tp / m.size, thr)


def roc_auc(member_scores, nonmember_scores) -> float:
    """P(member score > non-member score) + 0.5 P(tie) (Mann-Whitney U / (n_in n_out))."""
    m, n = _pair(member_scores, nonmember_scores)
    ranks = stats.rankdata(np.concatenate([m, n]))  # average ranks for ties
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * n.size))


def membership_advantage(member_scores, nonmember_scores) -> float:
    """max over thresholds of TPR - FPR (>= 0: the threshold +inf gives 0)."""
    roc = roc_curve(member_scores, nonmember_scores)
    return float(np.max(roc.tpr - roc.fpr))


@dataclass(frozen=True)
class TprAtFpr:
    """TPR at the threshold fixed on non-members for a target FPR, with its Clopper-Pearson
    interval (``method``) on the member count ``tp`` of ``n_members``."""

    target_fpr: float
    threshold: float
    tp: int
    n_members: int
    fp: int
    n_nonmembers: int
    ci_low: float
    ci_high: float
    resolvable: bool
    confidence: float = 0.95
    method: str = "clopper-pearson"

    @property
    def tpr(self) -> float:
        return self.tp / self.n_members

    @property
    def fpr(self) -> float:
        """The FPR actually achieved on the non-members (at most ``target_fpr``)."""
        return self.fp / self.n_nonmembers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["threshold"] = self.threshold if math.isfinite(self.threshold) else "inf"
        d.update(tpr=self.tpr, fpr=self.fpr)
        return d


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = 0.01, *,
               confidence: float = 0.95) -> TprAtFpr:
    check_range("fpr", fpr, lo=0, hi=1, lo_open=True, hi_open=True)
    check_range("confidence", confidence, lo=0, hi=1, lo_open=True, hi_open=True)
    m, n = _pair(member_scores, nonmember_scores)
    # candidate thresholds are the non-member scores only, so the members never move it
    thr = np.concatenate([[np.inf], np.unique(n)[::-1]])
    sm, sn = np.sort(m), np.sort(n)
    tp = m.size - np.searchsorted(sm, thr, side="left")
    fp = n.size - np.searchsorted(sn, thr, side="left")
    ok = fp <= math.floor(fpr * n.size + 1e-9)  # fp is non-decreasing along thr: a prefix
    i = int(np.flatnonzero(ok)[-1])  # the lowest such threshold within the FPR target
    lo, hi = clopper_pearson(tp[i], m.size, confidence)
    return TprAtFpr(float(fpr), float(thr[i]), int(tp[i]), int(m.size), int(fp[i]), int(n.size),
                    float(lo), float(hi), resolvable=fpr * n.size >= 1, confidence=confidence)


@dataclass(frozen=True)
class EpsilonLowerBound:
    """Jagielski et al. (2020) empirical ε lower bound and the threshold that attains it."""

    epsilon: float
    delta: float
    confidence: float
    threshold: float
    fpr_high: float
    fnr_high: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["threshold"] = self.threshold if math.isfinite(self.threshold) else "inf"
        return d


def epsilon_lower_bound(member_scores, nonmember_scores, *, delta: float = 1e-5,
                        confidence: float = 0.95) -> EpsilonLowerBound:
    check_range("delta", delta, lo=0, hi=1, hi_open=True)
    check_range("confidence", confidence, lo=0, hi=1, lo_open=True, hi_open=True)
    m, n = _pair(member_scores, nonmember_scores)
    thr, tp, fp = _counts(m, n)
    _, fpr_hi = clopper_pearson(fp, n.size, confidence)
    _, fnr_hi = clopper_pearson(m.size - tp, m.size, confidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.clip(1 - delta - fpr_hi, 0, None)) - np.log(fnr_hi)
        b = np.log(np.clip(1 - delta - fnr_hi, 0, None)) - np.log(fpr_hi)
    eps = np.nan_to_num(np.maximum(a, b), nan=-np.inf, posinf=np.inf)
    i = int(np.argmax(eps))
    best = max(float(eps[i]), 0.0)
    return EpsilonLowerBound(best, float(delta), float(confidence), float(thr[i]),
                             float(fpr_hi[i]), float(fnr_hi[i]))


@dataclass(frozen=True)
class MembershipMetrics:
    """Every DESIGN §4 membership-inference number for one set of scores."""

    auc: float
    advantage: float
    tpr_at: dict[float, TprAtFpr]
    epsilon: EpsilonLowerBound
    n_members: int
    n_nonmembers: int
    label: str = ""
    roc: RocCurve | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {
            "label": self.label, "auc": self.auc, "advantage": self.advantage,
            "tpr_at_fpr": {str(k): v.to_dict() for k, v in self.tpr_at.items()},
            "epsilon_lower_bound": self.epsilon.to_dict(),
            "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
            "roc": None if self.roc is None else self.roc.to_dict(),
        }


def membership_metrics(member_scores, nonmember_scores, *, fprs=DEFAULT_FPRS,
                       delta: float = 1e-5, confidence: float = 0.95, label: str = "",
                       keep_roc: bool = False) -> MembershipMetrics:
    m, n = _pair(member_scores, nonmember_scores)
    roc = roc_curve(m, n)
    return MembershipMetrics(
        auc=roc_auc(m, n), advantage=float(np.max(roc.tpr - roc.fpr)),
        tpr_at={float(f): tpr_at_fpr(m, n, f, confidence=confidence) for f in fprs},
        epsilon=epsilon_lower_bound(m, n, delta=delta, confidence=confidence),
        n_members=int(m.size), n_nonmembers=int(n.size), label=label,
        roc=roc if keep_roc else None)
