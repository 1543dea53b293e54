"""Compare two audits (two versions of a model): each headline metric's change, judged.

Metrics are matched by scenario id and metric name. A change is a **regression** when it moves in
the metric's bad direction (:data:`advkit.audit.gate.METRICS`: accuracies down, attack success up)
by more than ``tolerance`` (an absolute difference of proportions). Point estimates decide; each
change also says whether the two 95 % Wilson intervals overlap, in which case a regression may be
sampling noise. Audits of different specs or data may be compared, and the comparison says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from advkit.audit.history import AuditRecord, short_sha
from advkit.errors import HistoryError, check_range

EPS = 1e-12  # float slack: a change of exactly the tolerance is not a regression


@dataclass
class Change:
    """One metric of one scenario in both audits; ``delta`` is B - A."""

    scenario: str
    metric: str
    direction: str  # "at least" (higher is better) | "at most" (lower is better)
    a: dict[str, Any]
    b: dict[str, Any]
    delta: float | None
    status: str  # regressed | improved | unchanged | not measured
    overlap: bool | None  # the two 95 % intervals overlap (None: an interval is missing)


@dataclass
class Comparison:
    a: AuditRecord
    b: AuditRecord
    tolerance: float
    changes: list[Change] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)  # "scenario: metric" measured in A only
    only_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.status == "regressed"]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(), "tolerance": self.tolerance,
                "regressions": len(self.regressions), "notes": self.notes,
                "changes": [dict(c.__dict__) for c in self.changes],
                "verdicts": self.verdicts, "only_in_a": self.only_a, "only_in_b": self.only_b}


def _change(scenario: str, metric: str, pa: dict, pb: dict, tolerance: float) -> Change:
    from advkit.audit.gate import AT_LEAST, METRICS

    direction = METRICS[metric]
    va, vb = pa.get("value"), pb.get("value")
    if va is None or vb is None:
        return Change(scenario, metric, direction, pa, pb, None, "not measured", None)
    delta = vb - va
    worse = -delta if direction == AT_LEAST else delta
    status = ("regressed" if worse > tolerance + EPS else
              "improved" if -worse > tolerance + EPS else "unchanged")
    bounds = (pa.get("lo"), pa.get("hi"), pb.get("lo"), pb.get("hi"))
    overlap = None
    if all(isinstance(x, float) and math.isfinite(x) for x in bounds):
        overlap = bounds[0] <= bounds[3] and bounds[2] <= bounds[1]
    return Change(scenario, metric, direction, pa, pb, delta, status, overlap)


def _differs(x: str | None, y: str | None) -> bool:
    return x is not None and y is not None and x != y


def _notes(a: AuditRecord, b: AuditRecord, changes: list[Change]) -> list[str]:
    notes = []
    if _differs(a.spec_sha256, b.spec_sha256):
        notes.append(f"different specs (spec sha256 {short_sha(a.spec_sha256)} vs "
                     f"{short_sha(b.spec_sha256)}): metrics are matched by scenario id, but a "
                     "changed attack, budget or sample size changes what a number means")
    if _differs(a.data_sha256, b.data_sha256):
        notes.append(f"different data (data sha256 {short_sha(a.data_sha256)} vs "
                     f"{short_sha(b.data_sha256)})")
    if a.model_sha256 and a.model_sha256 == b.model_sha256:
        notes.append(f"the same model (sha256 {short_sha(a.model_sha256)}): differences come "
                     "from the spec, the seed or the advkit version, not from the model")
    if a.seed is not None and b.seed is not None and a.seed != b.seed:
        notes.append(f"different seeds ({a.seed} vs {b.seed})")
    if _differs(a.advkit_version, b.advkit_version):
        notes.append(f"different advkit versions ({a.advkit_version} vs {b.advkit_version})")
    if any(c.a.get("n") != c.b.get("n") for c in changes if c.metric != "attack_success_rate"):
        notes.append("different numbers of evaluated points: intervals differ in width")
    return notes


def compare(a: AuditRecord, b: AuditRecord, tolerance: float = 0.01) -> Comparison:
    """How each headline metric moved from audit ``a`` (the baseline) to audit ``b`` (the new
    version). A ``HistoryError`` when the two share no metric (nothing could be judged)."""
    check_range("--tolerance", tolerance, lo=0.0, hi=1.0)
    ma, mb = a.headline.get("metrics") or {}, b.headline.get("metrics") or {}
    out = Comparison(a=a, b=b, tolerance=float(tolerance))
    for sid, row in ma.items():
        for metric, pa in row.items():
            pb = (mb.get(sid) or {}).get(metric)
            if pb is None:
                out.only_a.append(f"{sid}: {metric}")
            else:
                out.changes.append(_change(sid, metric, pa, pb, tolerance))
    out.only_b = [f"{sid}: {metric}" for sid, row in mb.items() for metric in row
                  if metric not in (ma.get(sid) or {})]
    if not out.changes:
        raise HistoryError(
            f"nothing to compare: {a.source} and {b.source} share no metric (scenario id and "
            "metric name); compare two audits of the same spec, e.g. two model versions audited "
            "with one spec file")
    out.notes = _notes(a, b, out.changes)
    va = {v.get("threat"): v for v in a.headline.get("verdicts") or []}
    for v in b.headline.get("verdicts") or []:
        old = va.get(v.get("threat"))
        if old is not None:
            out.verdicts.append({"threat": v.get("threat"), "a": old.get("status"),
                                 "b": v.get("status"),
                                 "changed": old.get("status") != v.get("status")})
    return out


__all__ = ["Change", "Comparison", "compare"]
