"""The HTML rendering of a ``Report``: one self-contained file (inline CSS, plots and image grids
embedded as base64 PNG data URIs; no scripts, fonts or other external resources).

All formatting happens here in Python; the Jinja2 template (``templates/report.html.j2``, autoescape
on) only lays the formatted strings out, so every text from a report is HTML-escaped.
"""

from __future__ import annotations

import logging
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from advkit.audit.report import SEVERITIES, Finding, Report, Section, Table
from advkit.errors import visible
from advkit.report.json import write_text_atomic
from advkit.report.markdown import (
    MISSING,
    describe,
    finding_measure,
    flatten,
    fmt_value,
    gate_line,
    is_proportion,
    ordered_findings,
    report_verdicts,
    skipped_findings,
    split_gate,
    summary_tables,
    threat_matrix,
)
from advkit.report.plots import image_grid_png, plot_png, to_data_uri

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
MAX_GRID_IMAGES = 256  # per section; more would make the file needlessly large
_HEX = re.compile(r"^[0-9a-f]{32,}$")


def _finalize(value: Any) -> Any:
    """Every printed value: control characters (a terminal escape in a title) made visible;
    autoescape then HTML-escapes it."""
    return visible(value) if isinstance(value, str) and not isinstance(value, Markup) else value


@lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(loader=PackageLoader("advkit.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=True, finalize=_finalize)


def render_html(report: Report) -> str:
    """The report as one self-contained HTML document (a string)."""
    return _environment().get_template(TEMPLATE).render(**_context(report))


def write_html(report: Report, path: str | os.PathLike) -> Path:
    """Write ``render_html(report)`` to ``path`` atomically (parent folders are created)."""
    return write_text_atomic(Path(path), render_html(report))


# ---------------------------------------------------------------- view model

def _context(report: Report) -> dict[str, Any]:
    gate, checks = split_gate(report.findings)
    failed, passed = ordered_findings(checks)
    counts = [(s, sum(f.severity == s for f in failed)) for s in reversed(SEVERITIES)]
    sections = [_section(i, s) for i, s in enumerate(report.sections, start=1)]
    finished = _first(report.manifest, ("finished", "finished_at", "end", "ended"))
    subtitle = " · ".join(x for x in (f"model {describe(report.model, keys=0)}",
                                      f"data {describe(report.dataset, keys=0)}",
                                      f"finished {finished}" if finished else "") if x)
    return {
        "title": report.title,
        "subtitle": subtitle,
        "schema_version": report.schema_version,
        "advkit_version": _advkit_version(),
        "counts": [(s, n) for s, n in counts if n],
        "findings": [_finding(f) for f in failed],
        "passed": [_finding(f) for f in passed],
        "skipped": [_finding(f) for f in skipped_findings(checks)],
        "verdicts": report_verdicts(report),
        "matrix": threat_matrix(report),
        "gate": [{"passed": f.passed, "text": gate_line(f), "key": f.metric} for f in gate],
        "summaries": [{"kind": kind, "header": [h.replace("_", " ") for h in header],
                       "rows": rows, "numeric_from": 4}
                      for kind, header, rows in summary_tables(report.scenarios, report.dataset)],
        "model": _pairs(report.model),
        "dataset": _pairs(report.dataset),
        "sections": sections,
        "manifest": _pairs(report.manifest),
    }


def _finding(f: Finding) -> dict[str, Any]:
    known = f.severity in SEVERITIES
    return {"severity": f.severity.upper(), "css": f.severity if known else "info",
            "check": f.check, "measure": finding_measure(f), "why": f.why, "fix": f.fix,
            "threat": f.threat, "scenario": f.scenario or ""}


def _pairs(d: dict[str, Any]) -> list[dict[str, Any]]:
    """Flattened key/value rows; long hex digests are marked as code."""
    return [{"key": k, "value": fmt_value(v, limit=400),
             "code": isinstance(v, str) and bool(_HEX.match(v))} for k, v in flatten(d)]


def _table(t: Table) -> dict[str, Any]:
    rows = [[fmt_value(v) for v in row] + [MISSING] * (len(t.columns) - len(row))
            for row in t.rows]
    numeric = [all(_numeric(row[j]) for row in t.rows if j < len(row)) and any(t.rows)
               for j in range(len(t.columns))]
    return {"title": t.title, "columns": list(t.columns), "rows": rows, "numeric": numeric,
            "collapsed": t.collapsed}


def _numeric(v: Any) -> bool:
    return v is None or is_proportion(v) or (isinstance(v, int | float) and not isinstance(v, bool))


def _section(i: int, s: Section) -> dict[str, Any]:
    plots = [{"title": p.title, "uri": to_data_uri(plot_png(p))} for p in s.plots]
    grid = None
    if s.images:
        shown = s.images[:MAX_GRID_IMAGES]
        if len(s.images) > len(shown):
            log.info("section %r: showing %d of %d images", s.title, len(shown), len(s.images))
        note = (f"showing {len(shown)} of {len(s.images)} images"
                if len(s.images) > len(shown) else "")
        grid = {"uri": to_data_uri(image_grid_png(shown, s.image_columns)), "note": note,
                "alt": f"{s.title}: {len(shown)} images"}
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", s.text or "") if p.strip()]
    return {"id": f"section-{i}", "title": s.title, "paragraphs": paragraphs,
            "tables": [_table(t) for t in s.tables], "plots": plots, "grid": grid}


def _first(d: dict[str, Any], keys: tuple[str, ...]) -> str:
    flat = dict(flatten(d))
    for k in keys:
        for key, v in flat.items():
            if key.split(".")[-1] == k and v not in (None, ""):
                return fmt_value(v)
    return ""


def _advkit_version() -> str:
    from advkit import __version__

    return __version__


__all__ = ["render_html", "write_html", "TEMPLATE", "MAX_GRID_IMAGES"]
