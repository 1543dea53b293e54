"""The headline verdict per threat, judged from stored results only.

Evasion (defaults, overridable in a spec's ``verdicts: {evasion: {...}}`` section):

- The figure that matters is the per-point worst-case robust accuracy (over every attack run at that
  budget, minimum-norm attacks included) at each budget measured, with its 95 % Wilson interval.
- In each norm the verdict judges one budget: the one named in ``budgets`` (e.g. ``{linf: 0.1}``),
  else the largest eps measured by budgeted attacks (a norm with minimum-norm attacks only is judged
  only at a budget named in ``budgets`` or in a threshold: their unbounded norms say nothing about a
  budget by themselves).
- **vulnerable** when, in some norm, the worst-case robust accuracy at that budget (its estimate, or
  the ``bound`` chosen) is below ``max(min_ratio_to_clean × clean accuracy, min_robust_accuracy)``;
  defaults 0.5 and 0.0: the attacker turns at least half of the correct predictions into errors.
  Adversarially trained models keep more than half (Madry et al. 2018: 89 % of 98.8 % on MNIST at
  L∞ 0.3, about 45-60 % of 87 % on CIFAR-10 at 8/255), undefended models keep close to none, so the
  rule separates a defended model from an undefended one without tuning per dataset.
- **robust** ("robust at the tested budgets") when every judged norm clears the rule and no
  evaluation check failed with severity critical; **inconclusive** when it clears the rule but such
  a check failed (the numbers may overstate robustness); **not assessed** when no budget > 0 could
  be judged or the model classifies no evaluated point correctly.
"""

from __future__ import annotations

import math
from typing import Any

from advkit.audit.report import Finding, ScenarioResult, Verdict

DEFAULT_MIN_RATIO_TO_CLEAN = 0.5
DEFAULT_MIN_ROBUST_ACCURACY = 0.0
STATUS_TEXT = {
    "vulnerable": "vulnerable",
    "robust": "robust at the tested budgets",
    "inconclusive": "inconclusive: robust at the tested budgets, but an evaluation check failed",
    "not assessed": "not assessed",
}


def _rule(rules) -> dict[str, Any]:
    budgets = dict(getattr(rules, "budgets", None) or {})
    return {
        "metric": "worst-case robust accuracy",
        "min_ratio_to_clean": float(getattr(rules, "min_ratio_to_clean",
                                            DEFAULT_MIN_RATIO_TO_CLEAN)),
        "min_robust_accuracy": float(getattr(rules, "min_robust_accuracy",
                                             DEFAULT_MIN_ROBUST_ACCURACY)),
        "bound": getattr(rules, "bound", "value"),
        "budgets": budgets or "largest eps measured in each norm",
    }


def _bound(p, bound: str) -> float:
    return {"value": p.value, "lower": p.lo, "upper": p.hi}[bound]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(1.0, abs(b))


def evasion_verdict(points: list[ScenarioResult], findings: list[Finding], rules=None,
                    requested: dict[str, set[float]] | None = None) -> Verdict:
    """The evasion verdict from the worst-case scenarios (kind ``worst_case``) of a report and its
    evaluation-check findings; ``rules`` has the fields of the spec's ``verdicts.evasion``;
    ``requested[norm]``: budgets asked for elsewhere (thresholds), shown as figures too."""
    from advkit.audit.plan import norm_label

    rule = _rule(rules)
    budgets = {norm_label(k): float(v) for k, v in (getattr(rules, "budgets", None) or {}).items()}
    requested = requested or {}
    by_norm: dict[str, list[ScenarioResult]] = {}
    for s in points:
        by_norm.setdefault(s.params["norm"], []).append(s)
    figures, judged, vulnerable = [], [], []
    for norm, scs in by_norm.items():
        mn_only = bool(scs[0].params.get("minimum_norm_only"))
        wanted = set(requested.get(norm, ())) | ({budgets[norm]} if norm in budgets else set())
        shown = [s for s in scs if s.metrics["eps"] > 0
                 and (not mn_only or any(_close(s.metrics["eps"], e) for e in wanted))]
        if norm in budgets:
            pick = next((s for s in scs if _close(s.metrics["eps"], budgets[norm])), None)
        elif not mn_only and shown:
            pick = max(shown, key=lambda s: s.metrics["eps"])
        else:
            pick = None
        for s in shown:
            ra, clean = s.metrics["robust_accuracy"], s.metrics["clean_accuracy"]
            fig = {"norm": norm, "eps": s.metrics["eps"], "robust_accuracy": ra,
                   "clean_accuracy": clean, "attacks": list(s.params.get("attacks", [])),
                   "scenario": s.id, "judged": s is pick, "required": None, "vulnerable": None}
            if s is pick and clean.n and clean.k:
                need = max(rule["min_ratio_to_clean"] * clean.value, rule["min_robust_accuracy"])
                value = _bound(ra, rule["bound"])
                fig["required"] = need
                fig["vulnerable"] = bool(math.isnan(value) or value < need)
                judged.append(fig)
                if fig["vulnerable"]:
                    vulnerable.append(fig)
            figures.append(fig)
    critical = [f for f in findings if f.threat == "evasion" and not f.passed and not f.skipped
                and f.severity == "critical"]
    if not judged:
        status = "not assessed"
        reason = ("no budget above 0 could be judged: run a budgeted attack (eps > 0), or name a "
                  "budget for a minimum-norm attack's norm in verdicts.evasion.budgets"
                  if points else "no evasion attack was run")
        if points and all(s.metrics["clean_accuracy"].k == 0 for s in points):
            reason = "the model classifies no evaluated point correctly"
    elif vulnerable:
        status = "vulnerable"
        reason = ("an attack within the judged budget broke more of the model's correct "
                  "predictions than the rule allows")
    elif critical:
        status = "inconclusive"
        reason = ("the worst case clears the rule, but evaluation checks failed ("
                  + ", ".join(sorted({f.check for f in critical}))
                  + "): the attacks may be failing, so robustness may be overstated")
    else:
        status = "robust"
        reason = ("the worst case over every attack run clears the rule at the judged budget of "
                  "each norm; stronger or adaptive attacks, or larger budgets, may still break it")
    return Verdict(threat="evasion", status=status, figures=figures, rule=rule, reason=reason)


__all__ = ["evasion_verdict", "STATUS_TEXT", "DEFAULT_MIN_RATIO_TO_CLEAN",
           "DEFAULT_MIN_ROBUST_ACCURACY"]
