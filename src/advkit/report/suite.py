"""The index page of a suite preset (``advkit.audit.presets``): one row per member audit, with
its title, its threat verdicts and a link to its report.

Only the members' ``report.json`` files are read; every string from them is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

_STATUS = {"vulnerable": "critical", "robust": "passed", "inconclusive": "warning"}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ margin: 0 auto; max-width: 1100px; padding: 28px; color: #1b1f24;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 16px; }}
td:first-child {{ white-space: nowrap; }}
th, td {{ border-bottom: 1px solid #d6dbe0; padding: 8px 10px; text-align: left;
  vertical-align: top; }}
.badge {{ display: inline-block; font-size: 0.72rem; font-weight: 700; padding: 1px 7px;
  border-radius: 3px; color: #fff; margin: 0 4px 4px 0; }}
.critical {{ background: #a4161a; }} .passed {{ background: #1e6b34; }}
.warning {{ background: #8a5300; }}
.neutral {{ background: #59636e; }}
.muted {{ color: #59636e; }} a {{ color: #1d4f91; }}
</style></head><body>
<h1>{title}</h1>
<p class="muted">A suite of {n} audits (each audit has one dataset and one model); each row
links to its own report.</p>
<table><thead><tr><th>audit</th><th>title</th><th>verdicts</th><th>report</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


def _row(member: str, report_json: Path, out: Path) -> str:
    e = html.escape
    try:
        doc = json.loads(report_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return (f"<tr><td>{e(member)}</td><td colspan=3>no report: the audit did not finish"
                "</td></tr>")
    badges = " ".join(
        f'<span class="badge {_STATUS.get(v.get("status"), "neutral")}">'
        f'{e(str(v.get("threat")))}: {e(str(v.get("status")))}</span>'
        for v in doc.get("verdicts", []) if isinstance(v, dict))
    link = report_json.with_name("report.html").relative_to(out).as_posix()
    return (f"<tr><td><code>{e(member)}</code></td><td>{e(str(doc.get('title', '')))}</td>"
            f'<td>{badges}</td><td><a href="{e(link)}">{e(link)}</a></td></tr>')


def write_index(name: str, members: list[tuple[str, Path]], out: Path) -> Path:
    """Write ``out/index.html`` for the suite ``name`` from its members' report.json files."""
    rows = "\n".join(_row(m, p, out) for m, p in members)
    path = out / "index.html"
    path.write_text(_PAGE.format(title=html.escape(f"advkit suite: {name}"), n=len(members),
                                 rows=rows), encoding="utf-8")
    return path
