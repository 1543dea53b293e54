"""The audits page: the history (``advkit.audit.history``) as a table, each report opened in the
browser, and two audits compared (``advkit.audit.compare``) with their deltas.

A report is reached by its audit id only; its file is the ``report.html`` beside the ``report.json``
the history recorded (never a path from the browser), and it must be a regular file.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from advkit.errors import HistoryError, WebRequestError


def rows(history: Path | None, limit: int = 200) -> list[dict[str, Any]]:
    from advkit.audit.history import History, short_sha
    from advkit.cli.history import headline_figures

    with History(history, create=False) as h:
        records = h.list(limit)
    out = []
    for r in records:
        clean, robust, verdict = headline_figures(r)
        out.append({"id": r.id, "date": (r.started or "-")[:16].replace("T", " "),
                    "model": short_sha(r.model_sha256), "title": r.title or "",
                    "spec": r.spec_path or "-", "clean": clean, "robust": robust,
                    "verdict": verdict, "has_report": report_file(r) is not None})
    return out


def report_file(rec) -> Path | None:
    """The report.html of a history record, when it is still there as a regular file."""
    if not isinstance(rec.report_path, str) or not rec.report_path:
        return None
    html = Path(rec.report_path).with_name("report.html")
    try:
        st = html.lstat()
    except (OSError, ValueError):
        return None
    return html if stat.S_ISREG(st.st_mode) else None


def _record(history: Path | None, audit_id: int):
    from advkit.audit.history import History

    try:
        with History(history, create=False) as h:
            return h.get(audit_id)
    except HistoryError as exc:
        raise WebRequestError(str(exc), 404) from None


def report_html(history: Path | None, audit_id: int) -> str:
    path = report_file(_record(history, audit_id))
    if path is None:
        raise WebRequestError(f"audit #{audit_id} has no report.html any more (its folder was "
                              "moved or deleted); run the audit again", 404)
    return path.read_text(encoding="utf-8", errors="replace")


def comparison(history: Path | None, a: int, b: int, tolerance: float = 0.01) -> dict[str, Any]:
    """Audit ``a`` (baseline) against ``b``: each metric with both values and B - A."""
    from advkit.audit.compare import compare
    from advkit.audit.gate import AT_LEAST
    from advkit.cli.history import headline_figures, proportion_text

    ra, rb = _record(history, a), _record(history, b)
    try:
        result = compare(ra, rb, tolerance)
    except HistoryError as exc:
        raise WebRequestError(str(exc), 422) from None
    changes = [{"scenario": c.scenario, "metric": c.metric,
                "better": "higher" if c.direction == AT_LEAST else "lower",
                "a": proportion_text(c.a), "b": proportion_text(c.b),
                "delta": None if c.delta is None else f"{c.delta:+.3f}", "status": c.status,
                "overlap": c.overlap} for c in result.changes]
    sides = []
    for rec in (ra, rb):
        clean, robust, verdict = headline_figures(rec)
        sides.append({"id": rec.id, "title": rec.title or "", "date": (rec.started or "-")[:16],
                      "clean": clean, "robust": robust, "verdict": verdict})
    return {"a": sides[0], "b": sides[1], "changes": changes, "notes": result.notes,
            "verdicts": result.verdicts, "regressions": len(result.regressions),
            "tolerance": tolerance}
