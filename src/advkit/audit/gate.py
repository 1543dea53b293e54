"""``--fail-under`` thresholds: judge a report's metrics against minimum values."""

from __future__ import annotations

from advkit.audit.report import Finding, Report
from advkit.errors import AuditSpecError
from advkit.evaluation.metrics import Proportion


def _value(v) -> float | None:
    if isinstance(v, Proportion):
        return v.value
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return None


def metric_values(report: Report, key: str) -> list[float]:
    """Values of metric ``key`` over scenarios; ``name@eps`` restricts to scenarios at that eps."""
    name, _, eps = key.partition("@")
    out = []
    for s in report.scenarios:
        if eps and ("eps" not in s.metrics or abs(float(s.metrics["eps"]) - float(eps)) > 1e-12):
            continue
        v = _value(s.metrics.get(name))
        if v is not None:
            out.append(v)
    return out


def evaluate_thresholds(report: Report, thresholds: dict[str, float]) -> list[Finding]:
    """One Finding per threshold: the worst value over matching scenarios must be >= the threshold."""
    findings = []
    for key, threshold in thresholds.items():
        try:
            values = metric_values(report, key)
        except ValueError:
            values = []
        if not values:
            names = sorted(
                {k for s in report.scenarios for k, v in s.metrics.items() if _value(v) is not None}
            )
            raise AuditSpecError(
                f"--fail-under {key}: no scenario reports that metric; available: "
                f"{', '.join(names)} (optionally METRIC@EPS, e.g. robust_accuracy@0.1)"
            )
        worst = min(values)
        ok = worst >= threshold
        findings.append(
            Finding(
                check="fail_under",
                severity="info" if ok else "critical",
                metric=key,
                value=worst,
                threshold=threshold,
                passed=ok,
                threat="gate",
                why=f"the worst {key} over {len(values)} scenario(s) is {worst:.4f}; "
                f"the audit requires >= {threshold}",
                fix=""
                if ok
                else "harden the model (adversarial training, see the defenses) or revisit the threshold",
            )
        )
    return findings
