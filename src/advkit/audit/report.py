"""The ``Report`` of an audit and the typed pieces it is made of.

Everything here is raw numbers and arrays (no formatted strings of numbers); renderers in
``advkit.report`` only format. ``Report.to_dict()`` is the JSON document (``SCHEMA_VERSION``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, is_dataclass
from typing import Any

import numpy as np

from advkit.evaluation.metrics import Proportion
from advkit.threat_tags import ThreatTag

SCHEMA_VERSION = "1.1"  # 1.1: verdicts, Finding.skipped, worst_case scenarios
SEVERITIES = ("info", "warning", "critical")


@dataclass
class Finding:
    """One judged fact: check, severity, metric and threshold, why it matters and the fix."""

    check: str
    severity: str  # info | warning | critical
    metric: str
    value: float | None
    threshold: float | None
    why: str
    fix: str
    threat: str = "evasion"
    scenario: str | None = None
    passed: bool = False  # True: the check ran and found nothing wrong
    skipped: bool = False  # True: the check could not run (then passed is False too)
    # the threat taxonomy (property, phase, knowledge, MITRE ATLAS technique) of what was
    # judged, e.g. ``registry.get(attack).threat``; None where it is not known
    threat_tag: ThreatTag | None = None

    @property
    def status(self) -> str:
        """passed | skipped | failed."""
        return "skipped" if self.skipped else "passed" if self.passed else "failed"


VERDICT_STATUSES = ("vulnerable", "inconclusive", "robust", "not assessed")


@dataclass
class Verdict:
    """The headline judgement of one threat: how exposed the model is, in raw numbers.

    ``status`` is one of ``VERDICT_STATUSES``: "vulnerable" (an attack broke the model beyond the
    rule), "robust" (robust at the tested budgets), "inconclusive" (the numbers say robust but an
    evaluation check failed, so they may overstate robustness) or "not assessed". ``figures`` holds
    one dict per measured budget (norm, eps, worst-case robust and clean accuracy as Proportions,
    whether it was judged, the required value and whether it fell short); ``rule`` the rule's
    parameters; ``reason`` a sentence without numbers (renderers format the figures)."""

    threat: str
    status: str
    figures: list[dict[str, Any]] = field(default_factory=list)
    rule: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    tag: dict[str, Any] | None = None  # the family's ThreatTag.to_dict() (taxonomy, ATLAS)


@dataclass
class Series:
    """One line of a plot: y against x, with an optional interval band [lo, hi]."""

    label: str
    x: list[float]
    y: list[float]
    lo: list[float] | None = None
    hi: list[float] | None = None


@dataclass
class Plot:
    title: str
    xlabel: str
    ylabel: str
    series: list[Series]
    kind: str = "line"  # line | hist | scatter | bar
    ylim: tuple[float, float] | None = None
    scale: str = "linear"  # linear | loglog (both axes logarithmic: a ROC curve's low-FPR end)


@dataclass
class Image:
    """A grid cell: an image array (H×W gray or H×W×3, values in [0, 1]) with a caption."""

    caption: str
    pixels: np.ndarray
    group: str = ""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]  # raw values: float, int, str, Proportion, None
    title: str = ""
    collapsed: bool = False  # HTML: folded under its title (a detail table)


@dataclass
class Section:
    """A titled block of the report: text, tables, plots and images."""

    title: str
    text: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    image_columns: int = 8


@dataclass
class ScenarioResult:
    """One executed scenario (attack × defense × budget) with its headline metrics."""

    id: str
    kind: str  # evasion | poisoning | privacy | certification | ...
    attack: str
    params: dict[str, Any]
    metrics: dict[str, Proportion | float | int | None]
    seconds: float
    defense: str | None = None
    per_sample: dict[str, list] = field(default_factory=dict)
    from_store: bool = False  # read back from the progress store (computed by an earlier run)


@dataclass
class Report:
    manifest: dict[str, Any]
    model: dict[str, Any]
    dataset: dict[str, Any]
    scenarios: list[ScenarioResult] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    title: str = "advkit audit"
    schema_version: str = SCHEMA_VERSION
    verdicts: list[Verdict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Report:
        """The Report a ``to_dict`` document (or a loaded report.json) describes."""
        from advkit.audit.report_read import report_from_dict

        return report_from_dict(doc)

    def scenario(self, sid: str) -> ScenarioResult:
        for s in self.scenarios:
            if s.id == sid:
                return s
        raise KeyError(sid)


def _plain(obj):
    """Recursively turn dataclasses, Proportions, arrays and tensors into JSON-able values."""
    if isinstance(obj, Proportion):
        return _plain(obj.as_dict())
    if is_dataclass(obj) and not isinstance(obj, type):
        return {k: _plain(v) for k, v in asdict_shallow(obj).items()}
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch tensor
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, float | int | str | bool) or obj is None:
        return obj
    return str(obj)


def asdict_shallow(obj) -> dict[str, Any]:
    """Fields of a dataclass without deep-copying arrays (``dataclasses.asdict`` copies)."""
    return {f: getattr(obj, f) for f in obj.__dataclass_fields__}


__all__ = ["Finding", "Verdict", "VERDICT_STATUSES", "Series", "Plot", "Image", "Table",
           "Section", "ScenarioResult", "Report", "SCHEMA_VERSION", "SEVERITIES"]
