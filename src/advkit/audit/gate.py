"""CI thresholds (``fail_under`` in a spec, ``--fail-under`` on the command line).

A threshold is ``METRIC[@EPS[/NORM]][:BOUND]=VALUE``:

- ``METRIC`` knows its direction: ``clean_accuracy``, ``robust_accuracy`` and ``median_distance``
  must be *at least* VALUE; ``attack_success_rate`` must be *at most* VALUE.
- ``@EPS`` judges the per-point worst case over every attack run at that budget (minimum-norm
  attacks included through their per-point norms); ``/NORM`` (inf, l2, l1) restricts it to one norm,
  otherwise every norm of the plan must have measured EPS and the worst of them counts. Without
  ``@EPS``, ``robust_accuracy`` and ``attack_success_rate`` are judged at every budget measured
  (eps > 0), so the largest budget decides.
- ``:BOUND`` is ``value`` (the point estimate, the default), ``lower`` or ``upper`` (the 95 % Wilson
  interval's bounds): ``robust_accuracy@0.1:lower=0.5`` passes only when the interval lies above 0.5.

``parse_thresholds`` and ``check_thresholds`` run before anything is loaded or trained (an unknown
metric, a malformed key or a budget the plan does not measure is an ``AuditSpecError``);
``evaluate_thresholds`` judges a finished report, reading its scenarios only.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from advkit.audit.report import Finding, Report, ScenarioResult
from advkit.errors import AuditSpecError, InvalidParameterError, short
from advkit.evaluation.metrics import Proportion

AT_LEAST, AT_MOST = "at least", "at most"
#: metric -> direction; proportions are the first three
METRICS = {"clean_accuracy": AT_LEAST, "robust_accuracy": AT_LEAST,
           "attack_success_rate": AT_MOST, "median_distance": AT_LEAST}
PROPORTIONS = ("clean_accuracy", "robust_accuracy", "attack_success_rate")
BOUNDS = ("value", "lower", "upper")
SYNTAX = ("METRIC[@EPS[/NORM]][:BOUND]=VALUE, e.g. clean_accuracy=0.9, robust_accuracy@0.1=0.5, "
          "robust_accuracy@0.5/l2:lower=0.4 or attack_success_rate@0.1=0.3")
_KEY = re.compile(r"^(?P<metric>[A-Za-z_][A-Za-z0-9_]*)"
                  r"(?:@(?P<eps>[^/:=]+)(?:/(?P<norm>[^:=]+))?)?(?::(?P<bound>[A-Za-z]+))?$")


@dataclass(frozen=True)
class Threshold:
    key: str
    metric: str
    value: float
    eps: float | None = None
    norm: str | None = None  # canonical label (Linf, L2, L1), None: every norm of the plan
    bound: str = "value"

    @property
    def direction(self) -> str:
        return METRICS[self.metric]

    def missed(self, v: float) -> bool:
        if v is None or math.isnan(v):
            return True  # a value that cannot be measured (n = 0) never passes
        return v < self.value if self.direction == AT_LEAST else v > self.value


def parse_threshold(key: str, value, *, source: str = "fail_under") -> Threshold:
    """One threshold from its key and value; AuditSpecError naming the problem otherwise."""
    from advkit.audit.plan import norm_label

    text = str(key).strip()
    m = _KEY.match(text)
    if m is None:
        raise AuditSpecError(f"{source} {short(text)}: not a threshold; expected {SYNTAX}")
    metric, bound = m["metric"], (m["bound"] or "value").lower()
    if metric not in METRICS:
        raise AuditSpecError(
            f"{source} {short(text)}: unknown metric {short(metric)}; known metrics: "
            + ", ".join(f"{k} ({v})" for k, v in METRICS.items()))
    if bound not in BOUNDS:
        raise AuditSpecError(f"{source} {short(text)}: unknown bound {short(bound)}; use "
                             ":value (the estimate, default), :lower or :upper (95 % interval)")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuditSpecError(f"{source} {short(text)}: the threshold must be a finite number, "
                             f"got {short(value)}")
    if metric in PROPORTIONS and not 0 <= value <= 1:
        raise AuditSpecError(f"{source} {short(text)}: {metric} is a proportion in [0, 1], got "
                             f"{value:g} (write 0.3, not 30)")
    if metric == "median_distance" and value < 0:
        raise AuditSpecError(f"{source} {short(text)}: median_distance must be >= 0")
    eps = norm = None
    if m["eps"] is not None:
        if metric in ("clean_accuracy", "median_distance"):
            raise AuditSpecError(f"{source} {short(text)}: {metric} does not depend on a budget; "
                                 f"drop the @{m['eps']}")
        try:
            eps = float(m["eps"])
        except ValueError:
            eps = math.nan
        if not math.isfinite(eps) or eps < 0:
            raise AuditSpecError(f"{source} {short(text)}: @{short(m['eps'])} is not a budget "
                                 "(a number >= 0)")
        if m["norm"] is not None:
            try:
                norm = norm_label(m["norm"])
            except InvalidParameterError:
                raise AuditSpecError(f"{source} {short(text)}: unknown norm {short(m['norm'])}; "
                                     "use inf, l2 or l1") from None
    return Threshold(key=text, metric=metric, value=float(value), eps=eps, norm=norm, bound=bound)


def parse_thresholds(items: dict, *, source: str = "fail_under") -> list[Threshold]:
    return [parse_threshold(k, v, source=source) for k, v in items.items()]


def check_thresholds(thresholds: list[Threshold], plan, *, source: str = "fail_under") -> None:
    """Refuse, before any work, a threshold the plan cannot answer: a budget no scenario measures
    (for the given norm, or for some norm of the plan when none is given), a robustness metric
    without any budgeted scenario, ``median_distance`` without a minimum-norm attack."""
    from advkit.audit.plan import plan_budgets

    budgets = plan_budgets(plan)
    for t in thresholds:
        if t.metric == "clean_accuracy":
            continue
        if t.metric == "median_distance":
            if not budgets.minimum_norm:
                raise AuditSpecError(f"{source} {t.key}: median_distance is measured by "
                                     "minimum-norm attacks (deepfool, cw-l2, ...) and the plan "
                                     "has none")
            continue
        if t.eps is None:
            if not any(e > 0 for es in budgets.eps.values() for e in es):
                raise AuditSpecError(f"{source} {t.key}: the plan measures no budget eps > 0; "
                                     f"give one as {t.metric}@EPS (measured: "
                                     f"{budgets.describe()})")
            continue
        if t.norm is not None and t.norm not in budgets.norms:
            raise AuditSpecError(f"{source} {t.key}: no attack of the plan runs in {t.norm} "
                                 f"(measured: {budgets.describe()})")
        norms = [t.norm] if t.norm else budgets.norms
        missing = [n for n in norms if not budgets.answers(n, t.eps)]
        if missing or not norms:
            answering = [n for n in norms if n not in missing]
            hint = (f"; or restrict it to a norm that measured it: "
                    f"{t.metric}@{t.eps:g}/{answering[0].lower()}"
                    if t.norm is None and answering else "")
            raise AuditSpecError(
                f"{source} {t.key}: eps {t.eps:g} is not a budget of the plan for "
                f"{', '.join(missing) or 'any norm'} (measured: {budgets.describe()}); add it to "
                f"an attack's eps list{hint}")


def _bounded(v, bound: str) -> float | None:
    if isinstance(v, Proportion):
        return {"value": v.value, "lower": v.lo, "upper": v.hi}[bound] if v.n else math.nan
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return None


def _norm_of(s: ScenarioResult) -> str | None:
    from advkit.audit.plan import norm_label

    try:
        return norm_label(s.params.get("norm", "Linf"))
    except InvalidParameterError:
        return None


def _eps_match(a, b: float) -> bool:
    return a is not None and abs(float(a) - b) <= 1e-9 * max(1.0, abs(b))


def _candidates(report: Report, t: Threshold) -> list[ScenarioResult]:
    worst = [s for s in report.scenarios if s.kind == "worst_case"]
    if t.metric == "clean_accuracy":  # the audited model's: not a poisoned or retrained one's
        evasion = [s for s in report.scenarios if s.kind in EVASION_KINDS
                   and "clean_accuracy" in s.metrics]
        return evasion or [s for s in report.scenarios if "clean_accuracy" in s.metrics]
    if t.metric == "median_distance":
        return [s for s in report.scenarios
                if s.per_sample.get("minimum_norm") and "median_distance" in s.metrics]
    if worst:  # an evasion audit: judge the per-point worst case
        pool = worst
    else:  # a report without worst-case points (presets): the scenarios themselves
        pool = [s for s in report.scenarios if s.metrics.get("eps") is not None
                and t.metric in s.metrics]
    if t.eps is None:
        return [s for s in pool if float(s.metrics["eps"]) > 0]
    return [s for s in pool if _eps_match(s.metrics.get("eps"), t.eps)
            and (t.norm is None or _norm_of(s) == t.norm)]


EVASION_KINDS = ("evasion", "ensemble", "worst_case")


def evaluate_thresholds(report: Report, thresholds) -> list[Finding]:
    """One Finding per threshold, judged in the metric's direction on the worst matching value
    (the smallest for "at least" metrics, the largest for "at most" ones). ``thresholds``: parsed
    ``Threshold``s or a ``{key: value}`` dict. A threshold nothing in the report answers is an
    ``AuditSpecError`` (``check_thresholds`` catches these before an audit runs)."""
    if isinstance(thresholds, dict):
        thresholds = parse_thresholds(thresholds)
    findings = []
    for t in thresholds:
        values = []
        for s in _candidates(report, t):
            v = s.metrics.get(t.metric)
            if t.metric == "median_distance" and v is None:
                v = math.inf  # the attack fooled no point: no finite distance breaks it
            b = _bounded(v, t.bound)
            if b is not None:
                values.append((b, s.id))
        if not values:
            raise AuditSpecError(
                f"threshold {t.key}: no scenario of the report measures {t.metric}"
                + (f" at eps {t.eps:g}" if t.eps is not None else ""))
        nan = [x for x in values if math.isnan(x[0])]
        if nan:
            worst, sid = nan[0]
        elif t.direction == AT_LEAST:
            worst, sid = min(values)
        else:
            worst, sid = max(values)
        missed = t.missed(worst)
        what = t.metric if t.bound == "value" else f"{t.bound} 95 % bound of {t.metric}"
        where = f" at eps {t.eps:g}" + (f" ({t.norm})" if t.norm else "") if t.eps is not None else ""
        findings.append(Finding(
            check="threshold", severity="critical" if missed else "info", metric=t.key,
            value=None if math.isnan(worst) else worst, threshold=t.value, passed=not missed,
            threat="gate", scenario=sid,
            why=f"the worst {what}{where} over {len(values)} measurement(s) must be "
                f"{t.direction} {t.value:g}" + (" and is not" if missed else ""),
            fix="harden the model (adversarial training, see the defenses) or revisit the "
                "threshold" if missed else ""))
    return findings


__all__ = ["Threshold", "METRICS", "BOUNDS", "AT_LEAST", "AT_MOST", "parse_threshold",
           "parse_thresholds", "check_thresholds", "evaluate_thresholds"]
