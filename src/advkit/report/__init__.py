"""Renderers for an audit ``Report`` (DESIGN §1.6): one self-contained HTML file with plots, JSON
with a schema version, and a Markdown summary for CI logs. Renderers only format; they compute
nothing. The HTML renderer (jinja2 + matplotlib) is imported on first use.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advkit.paths import path_error
from advkit.report.json import (
    ReportFormatError,
    load_json,
    to_json,
    write_json,
    write_texts_atomic,
)
from advkit.report.markdown import render_markdown

if TYPE_CHECKING:
    from advkit.audit.report import Report
    from advkit.report.html import render_html, write_html

_LAZY = {"render_html": "advkit.report.html", "write_html": "advkit.report.html"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advkit.report' has no attribute {name!r}")


def write_report(report: Report, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write ``report.html`` and ``report.json`` into ``out_dir`` (created if needed), all or
    nothing: both are rendered, then written to temporary files, then renamed into place, so a
    failure leaves neither file half-written nor one without the other.

    Returns ``{"html": Path, "json": Path, "markdown": str}``; the Markdown summary is returned,
    not written, so a caller can print it to a log. An OS error (disk full, no permission) is an
    ``InvalidParameterError`` naming ``out_dir`` and the fix.
    """
    from advkit.report.html import render_html

    out = Path(out_dir)
    html, js = out / "report.html", out / "report.json"
    texts = {html: render_html(report), js: to_json(report)}
    try:
        write_texts_atomic(texts)
    except OSError as exc:
        raise path_error("out_dir", out, exc) from exc
    return {"html": html, "json": js, "markdown": render_markdown(report)}


__all__ = ["write_json", "to_json", "load_json", "render_html", "write_html", "render_markdown",
           "write_report", "ReportFormatError"]
