"""``advkit history`` and ``advkit compare A B``: the audit trail (see :mod:`advkit.audit.history`).

``advkit audit`` calls :func:`record` once its report is written; a history that cannot be written
is a warning there, never a failed audit.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import typer

from advkit.cli.output import echo

HISTORY_HELP = ("Audit history database (SQLite); default $ADVKIT_HISTORY, else history.sqlite "
                "in the user data folder.")


def history_option() -> Any:
    return typer.Option(None, "--history", help=HISTORY_HELP)


def record(report, json_path: Path, history: Path | None, *, spec: Path | None = None,
           preset: str | None = None) -> int | None:
    """Append a finished audit to the history; on any failure warn (the report is already
    written) and return None, else the new audit id."""
    from dataclasses import replace

    try:
        from advkit.audit.history import record_audit
        from advkit.report.json import report_dict

        light = replace(report, sections=[],  # the headline needs neither plots nor per-point data
                        scenarios=[replace(s, per_sample={}) for s in report.scenarios])
        spec_path = (str(Path(spec).resolve()) if spec is not None
                     else f"preset:{preset}" if preset else None)
        audit_id, path = record_audit(report_dict(light), path=history, spec_path=spec_path,
                                      report_path=str(Path(json_path).resolve()))
    except Exception as exc:  # noqa: BLE001 - the report is written; the history must not fail it
        echo(f"WARNING: this audit was not added to the audit history: {type(exc).__name__}: "
             f"{exc} (the report is written: {json_path})", err=True)
        return None
    echo(f"history: audit #{audit_id} in {path}")
    return audit_id


# ---------------------------------------------------------------- formatting


def proportion_text(p: dict | None) -> str:
    if not p or p.get("value") is None:
        return "n/a"
    if p.get("lo") is None or p.get("hi") is None:
        return f"{p['value']:.3f}"
    return f"{p['value']:.3f} [{p['lo']:.3f}, {p['hi']:.3f}]"


def _date(iso: str | None) -> str:
    return iso[:16].replace("T", " ") if iso else "-"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in [header, *rows]]


def headline_figures(rec) -> tuple[str, str, str]:
    """(clean accuracy, worst-case robust accuracy at the judged budget, verdicts) of a record."""
    head = rec.headline
    judged = [(f, v) for v in head.get("verdicts") or [] for f in v.get("judged") or []
              if (f.get("robust_accuracy") or {}).get("value") is not None]
    robust, clean = "-", None
    if judged:
        f, _ = min(judged, key=lambda fv: fv[0]["robust_accuracy"]["value"])
        robust = f"{f['robust_accuracy']['value']:.3f} @ {f.get('norm')} {f.get('eps'):g}"
        clean = f.get("clean_accuracy")
    if clean is None:
        clean = next((row["clean_accuracy"] for row in (head.get("metrics") or {}).values()
                      if "clean_accuracy" in row), None)
    verdict = ", ".join(f"{v.get('threat')}: {v.get('status')}" for v in head.get("verdicts") or [])
    gate = head.get("gate") or []
    if gate:
        failed = sum(not g.get("passed") for g in gate)
        verdict += ("; " if verdict else "") + (f"gate FAILED {failed}/{len(gate)}" if failed
                                                else "gate passed")
    clean_s = "-" if not clean or clean.get("value") is None else f"{clean['value']:.3f}"
    return clean_s, robust, verdict or "-"


def _label(rec) -> str:
    from advkit.audit.history import short_sha

    title = (rec.title or "")[:40]
    return f"{rec.source}  {_date(rec.started)}  model {short_sha(rec.model_sha256)}  {title}"


# ---------------------------------------------------------------- commands


def history(
    history: Path = history_option(),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
    limit: int = typer.Option(20, "--limit", "-n", help="Show at most this many audits, newest "
                              "first."),
) -> int:
    """List the recorded audits: id, date, model hash, title, headline figures, verdict."""
    from advkit.audit.history import History, short_sha
    from advkit.errors import check_range

    check_range("--limit", limit, lo=1, kind=int)
    with History(history, create=False) as h:
        records, path = h.list(limit), h.path
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in records], indent=2, ensure_ascii=False,
                              allow_nan=False))
        return 0
    if not records:
        echo(f"no audits recorded in {path} yet; `advkit audit` adds one per run")
        return 0
    rows = []
    for r in records:
        clean, robust, verdict = headline_figures(r)
        rows.append([str(r.id), _date(r.started), short_sha(r.model_sha256),
                     (r.title or "")[:30], clean, robust, verdict])
    for line in _table(["id", "date (UTC)", "model", "title", "clean acc",
                        "worst-case robust acc", "verdict"], rows):
        echo(line)
    echo(f"({len(records)} shown; history: {path})")
    return 0


def _collapsed(changes) -> list[tuple[Any, int]]:
    """One row per metric and pair of values: scenarios measured on the same points (a clean
    accuracy repeated by every scenario, a worst case equal to its only attack) show once, with
    the number of other scenarios that had the same two values (``--json`` keeps every one)."""
    groups: dict[tuple, list] = {}
    for c in changes:
        key = (c.metric, tuple(sorted(c.a.items())), tuple(sorted(c.b.items())))
        groups.setdefault(key, []).append(c)
    return [(next((c for c in g if c.scenario.startswith("worst-case/")), g[0]), len(g) - 1)
            for g in groups.values()]


def _resolve(arg: str, name: str, history: Path | None):
    """An audit given as a history id (``3`` or ``#3``) or a report.json (or its folder)."""
    from advkit.audit.history import History, record_from_report
    from advkit.errors import HistoryError, short
    from advkit.paths import check_path
    from advkit.report.json import load_json

    p = Path(arg)
    st = check_path(p, name)
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            p = p / "report.json"
        return record_from_report(load_json(p), report_path=str(p), source=str(p))
    m = re.fullmatch(r"#?(\d{1,18})", arg.strip())
    if m is None:
        raise HistoryError(f"{name} {short(arg)} is neither a report file nor an audit id; pass "
                           "an id from `advkit history` or the path of a report.json (or of the "
                           "--out folder that holds it)")
    with History(history, create=False) as h:
        return h.get(int(m[1]))


def compare(
    a: str = typer.Argument(..., help="The baseline audit: a history id or a report.json path."),
    b: str = typer.Argument(..., help="The new audit: a history id or a report.json path."),
    history: Path = history_option(),
    tolerance: float = typer.Option(
        0.01, "--tolerance", help="A metric regresses when it moves this much (absolute) in its "
        "bad direction: accuracies down, attack success up."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable JSON on stdout."),
) -> int:
    """Show each metric's change from audit A (baseline) to B; exit 1 when one regresses beyond
    --tolerance, 2 on bad input (unknown id, unreadable report)."""
    from advkit.audit.compare import compare as compare_audits
    from advkit.audit.gate import AT_LEAST
    from advkit.errors import check_range

    check_range("--tolerance", tolerance, lo=0.0, hi=1.0)
    result = compare_audits(_resolve(a, "A", history), _resolve(b, "B", history), tolerance)
    regressions = result.regressions
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False, allow_nan=False))
        return 1 if regressions else 0
    echo(f"A  {_label(result.a)}")
    echo(f"B  {_label(result.b)}")
    for note in result.notes:
        echo(f"note: {note}")
    echo("")
    rows, noisy = [], False
    for c, n_same in _collapsed(result.changes):
        mark = ""
        if c.status == "regressed" and c.overlap:
            mark, noisy = "*", True
        delta = "n/a" if c.delta is None else f"{c.delta:+.3f}"
        where = c.scenario + (f" (+{n_same} more)" if n_same else "")
        rows.append([where, c.metric, "higher" if c.direction == AT_LEAST else "lower",
                     proportion_text(c.a), proportion_text(c.b), delta, c.status.upper() + mark
                     if c.status == "regressed" else c.status])
    for line in _table(["scenario", "metric", "better", "A [95 % CI]", "B [95 % CI]", "B - A",
                        f"tolerance {result.tolerance:g}"], rows):
        echo(line)
    if noisy:
        echo("* the two 95 % intervals overlap: the change may be sampling noise; evaluate more "
             "points (evaluation.n_samples) to tell")
    for v in result.verdicts:
        echo(f"verdict {v['threat']}: {v['a']} -> {v['b']}" if v["changed"]
             else f"verdict {v['threat']}: {v['a']} (unchanged)")
    for what, items in (("A", result.only_a), ("B", result.only_b)):
        if items:
            echo(f"only in {what} (not compared): {', '.join(items[:10])}"
                 + (f" and {len(items) - 10} more" if len(items) > 10 else ""))
    if regressions:
        for c, n_same in _collapsed(regressions):
            more = f" (+{n_same} more)" if n_same else ""
            echo(f"REGRESSION: {c.scenario}{more} {c.metric}: {proportion_text(c.a)} -> "
                 f"{proportion_text(c.b)} ({c.delta:+.3f}, tolerance {result.tolerance:g})", err=True)
        echo(f"{len(regressions)} metric(s) regressed beyond the tolerance from A to B", err=True)
        return 1
    echo(f"no metric regressed beyond the tolerance {result.tolerance:g} from A to B")
    return 0


__all__ = ["history", "compare", "record", "history_option", "headline_figures", "proportion_text"]
