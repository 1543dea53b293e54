"""A compact Markdown summary of a ``Report`` for CI logs and the terminal, plus the value
formatting every renderer shares (proportions as ``value [lo, hi] (n=N)``, floats to 4
significant digits). Renderers only format: nothing here computes a metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from advkit.audit.report import SEVERITIES, Finding, Report, ScenarioResult, Verdict
from advkit.evaluation.metrics import Proportion

MISSING = "–"
_PROPORTION_KEYS = {"value", "n", "ci_low", "ci_high"}
SEVERITY_ORDER = {s: i for i, s in enumerate(reversed(SEVERITIES))}  # critical 0, warning 1, info 2


# ---------------------------------------------------------------- value formatting (shared)

def fmt_number(x: Any) -> str:
    """Numbers for humans: ints as they are, floats to 4 significant digits, None/NaN as n/a."""
    if x is None:
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "n/a"
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    if f == int(f) and abs(f) < 1e6:
        return str(int(f))
    return f"{f:.4g}"


def fmt_proportion(p: Proportion | Mapping[str, Any]) -> str:
    """``0.873 [0.812, 0.917] (n=150)``: value, interval and n (as ``Proportion.__str__``)."""
    if isinstance(p, Proportion):
        value, lo, hi, n = p.value, p.lo, p.hi, p.n
    else:
        value, lo, hi, n = p.get("value"), p.get("ci_low"), p.get("ci_high"), p.get("n")
    if not n:
        return f"n/a (n={n or 0})"

    def f3(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    return f"{f3(value)} [{f3(lo)}, {f3(hi)}] (n={n})"


def is_proportion(v: Any) -> bool:
    """A Proportion, or its dict form as written to JSON."""
    return isinstance(v, Proportion) or (isinstance(v, Mapping) and _PROPORTION_KEYS <= set(v))


def fmt_value(v: Any, *, limit: int = 120) -> str:
    """Any raw report value as short text: proportions, numbers, strings, lists and dicts."""
    if is_proportion(v):
        text = fmt_proportion(v)
    elif v is None or isinstance(v, bool | int | float):
        text = fmt_number(v)
    elif isinstance(v, str):
        text = v
    elif isinstance(v, Mapping):
        text = ", ".join(f"{k}={fmt_value(x, limit=limit)}" for k, x in v.items())
    elif isinstance(v, list | tuple):
        shown = [fmt_value(x, limit=limit) for x in v[:8]]
        more = f", … (+{len(v) - 8})" if len(v) > 8 else ""
        text = "[" + ", ".join(shown) + more + "]"
    elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:  # numpy / torch scalar
        text = fmt_number(v.item())
    else:
        text = str(v)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fmt_seconds(s: Any) -> str:
    if s is None or not isinstance(s, int | float) or math.isnan(s):
        return MISSING
    if s < 60:
        return f"{s:.3g} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def fmt_params(params: Mapping[str, Any], *, limit: int = 80) -> str:
    """``eps=0.03137, steps=40, norm=inf`` (insertion order, truncated to ``limit`` characters)."""
    return fmt_value(dict(params), limit=limit) if params else MISSING


def flatten(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as dotted keys: ``{"versions": {"torch": "2.1"}}`` -> ``versions.torch``."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v and not is_proportion(v):
            out.extend(flatten(v, key + "."))
        else:
            out.append((key, v))
    return out


def severity_rank(f: Finding) -> int:
    return SEVERITY_ORDER.get(f.severity, len(SEVERITY_ORDER))


def ordered_findings(findings: Iterable[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(failed findings, critical first then warning then info; passed checks), stable order.
    Skipped checks are in neither list (see ``skipped_findings``)."""
    findings = [f for f in findings if not getattr(f, "skipped", False)]
    failed = sorted((f for f in findings if not f.passed), key=severity_rank)
    return failed, [f for f in findings if f.passed]


def skipped_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Checks that could not run (neither passed nor failed)."""
    return [f for f in findings if getattr(f, "skipped", False)]


def split_gate(findings: Iterable[Finding]) -> tuple[list[Finding], list[Finding]]:
    """(threshold findings of the CI gate, every other finding: the evaluation checks)."""
    findings = list(findings)
    return ([f for f in findings if f.threat == "gate"],
            [f for f in findings if f.threat != "gate"])


# ---------------------------------------------------------------- verdicts (shared)

VERDICT_CSS = {"vulnerable": "critical", "inconclusive": "warning", "robust": "passed",
               "not assessed": "neutral"}
_STATUS_TEXT = {"vulnerable": "vulnerable", "robust": "robust at the tested budgets",
                "inconclusive": "inconclusive", "not assessed": "not assessed"}
NO_VERDICT = Verdict(threat="all threats", status="not assessed",
                     reason="this report holds no threat verdict (no evasion audit was run)")


def _get(obj: Any, key: str, default: Any = None) -> Any:
    return obj.get(key, default) if isinstance(obj, Mapping) else getattr(obj, key, default)


def verdict_view(v: Verdict | Mapping[str, Any]) -> dict[str, Any]:
    """A verdict as formatted strings: status, headline, one line per budget and the rule."""
    status = _get(v, "status", "not assessed")
    figures = []
    for fig in _get(v, "figures", []) or []:
        if "text" in fig:  # a family whose figures are not per-budget robust accuracies
            figures.append({"text": fig["text"], "judged": bool(fig.get("judged")),
                            "vulnerable": bool(fig.get("vulnerable"))})
            continue
        text = (f"{fig['norm']} eps={fmt_number(fig['eps'])}: worst-case robust accuracy "
                f"{fmt_value(fig['robust_accuracy'])}")
        if fig.get("judged") and fig.get("required") is not None:
            clean = fig["clean_accuracy"]
            cval = clean.value if isinstance(clean, Proportion) else clean.get("value")
            word = "below" if fig.get("vulnerable") else "at or above"
            text += (f" — judged: {word} the required {fmt_number(fig['required'])} "
                     f"(clean accuracy {fmt_number(cval)})")
        figures.append({"text": text, "judged": bool(fig.get("judged")),
                        "vulnerable": bool(fig.get("vulnerable"))})
    rule = _get(v, "rule", {}) or {}
    rule_text = ""
    if "text" in rule:
        rule_text = rule["text"]
    elif rule:
        bound = rule.get("bound", "value")
        what = "estimate" if bound == "value" else f"{bound} 95 % bound"
        budgets = rule.get("budgets")
        where = (budgets if isinstance(budgets, str)
                 else ", ".join(f"{k} eps={fmt_number(e)}" for k, e in budgets.items()))
        rule_text = (f"vulnerable when the worst-case robust accuracy ({what}) at the judged budget "
                     f"is below max({fmt_number(rule.get('min_ratio_to_clean'))} × clean accuracy, "
                     f"{fmt_number(rule.get('min_robust_accuracy'))}); judged budget: {where}")
    return {"threat": _get(v, "threat", ""), "status": status,
            # a family's own rule (not per-budget robust accuracy): no "budgets" in its label
            "label": ("robust as tested" if status == "robust" and "text" in rule
                      else _STATUS_TEXT.get(status, status)).upper(),
            "css": VERDICT_CSS.get(status, "neutral"), "reason": _get(v, "reason", ""),
            "figures": figures, "rule": rule_text}


def threat_matrix(report: Report) -> tuple[list[str], list[list[str]]]:
    """The threat × verdict matrix: one row per verdict (a family that ran) with its taxonomy
    (property at risk, phase, attacker's knowledge, MITRE ATLAS technique), its headline figure
    (the first judged one that found the model vulnerable, else the first judged one, else the
    first) and its verdict."""
    header = ["threat", "verdict", "headline", "property", "phase", "knowledge", "ATLAS"]
    rows = []
    for raw, v in zip(getattr(report, "verdicts", None) or [], report_verdicts(report),
                      strict=False):
        t = _get(raw, "tag") or {}
        figs = v["figures"]
        judged = [f for f in figs if f["judged"]]
        decisive = [f for f in judged if f["vulnerable"]] or judged or figs
        head = decisive[0]["text"] if decisive else v["reason"]
        atlas = (f"{t['atlas_id']} {t.get('atlas_name', '')}".strip() if t.get("atlas_id")
                 else MISSING)
        rows.append([v["threat"], v["label"], head, t.get("property", MISSING),
                     t.get("phase", MISSING), t.get("knowledge", MISSING), atlas])
    return header, rows


def report_verdicts(report: Report) -> list[dict[str, Any]]:
    return [verdict_view(v) for v in (getattr(report, "verdicts", None) or [NO_VERDICT])]


def gate_line(f: Finding) -> str:
    """``robust_accuracy@0.1 = 0.41, must be at least 0.5`` for a threshold finding."""
    return f"{f.metric} = {fmt_number(f.value)}: {f.why}"


def finding_measure(f: Finding) -> str:
    """``robust_accuracy = 0.12 (threshold 0.5)`` or ``""`` when the finding has no metric."""
    if not f.metric:
        return ""
    text = f"{f.metric} = {fmt_number(f.value)}"
    return text + (f" (threshold {fmt_number(f.threshold)})" if f.threshold is not None else "")


def eps_header(dataset: Mapping[str, Any] | None) -> str:
    """The eps column's header: with its unit for tabular data (per-feature normalised units)."""
    unit = ((dataset or {}).get("features") or {}).get("eps_unit")
    return "eps (fraction of each feature's range)" if unit else "eps"


def summary_tables(
    scenarios: Iterable[ScenarioResult], dataset: Mapping[str, Any] | None = None,
) -> list[tuple[str, list[str], list[list[str]]]]:
    """One (kind, header, rows of formatted cells) table per scenario kind, in order of first
    appearance; metric columns are the union of the kind's metric names in first-seen order
    (``dataset``: the report's, for the unit of eps)."""
    by_kind: dict[str, list[ScenarioResult]] = {}
    for s in scenarios:
        by_kind.setdefault(s.kind, []).append(s)
    tables = []
    for kind, group in by_kind.items():
        metrics: list[str] = []
        for s in group:
            metrics.extend(m for m in s.metrics if m not in metrics)
        header = ["scenario", "attack", "defense", "params",
                  *(eps_header(dataset) if m == "eps" else m for m in metrics), "time"]
        rows = [[s.id, s.attack, s.defense or "none", fmt_params(s.params),
                 *(fmt_value(s.metrics[m]) if m in s.metrics else MISSING for m in metrics),
                 fmt_seconds(s.seconds) + (" (from store)" if getattr(s, "from_store", False)
                                           else "")] for s in group]
        tables.append((kind, header, rows))
    return tables


def describe(d: Mapping[str, Any], *, keys: int = 5) -> str:
    """``digits (shape=[1, 8, 8], n_classes=10)``: a name and a few short scalar facts."""
    name = d.get("name") or d.get("id") or "unnamed"
    facts = [f"{k}={fmt_value(v, limit=40)}" for k, v in d.items()
             if k not in ("name", "id") and v not in (None, "", [], {})
             and not (isinstance(v, list) and len(v) > 4) and not isinstance(v, Mapping)]
    return f"{name} ({', '.join(facts[:keys])})" if facts[:keys] else str(name)


# ---------------------------------------------------------------- Markdown

def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _line(text: str) -> str:
    return " ".join(str(text).split())


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _manifest_items(manifest: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Seed first, then hashes, then the rest (versions, command, times) in their order."""
    items = flatten(manifest)
    tasks = (manifest.get("executor") or {}).get("tasks")
    if tasks:  # one line, not one per stage and field: where each ran is in report.json
        items = [i for i in items if not i[0].startswith("executor.tasks.")]
        items.append(("executor.tasks", f"{len(tasks)} stages (node, process, seconds and log "
                                        "files of each: manifest.executor.tasks in report.json)"))

    def rank(item: tuple[str, Any]) -> int:
        k = item[0].lower()
        return 0 if "seed" in k else 1 if ("sha" in k or "hash" in k) else 2

    return sorted(items, key=rank)


def render_markdown(report: Report) -> str:
    """A compact Markdown summary: title, model and data, findings, scenario tables, run facts."""
    lines = [f"# {report.title}", "",
             f"**Model:** {describe(report.model)}  ",
             f"**Data:** {describe(report.dataset)}", ""]
    header, rows = threat_matrix(report)
    if len(rows) > 1:
        lines += ["## Threats", ""] + _table(header, rows) + [""]
    lines += ["## Verdict", ""]
    for v in report_verdicts(report):
        lines.append(f"- **{v['threat']}: {v['label']}** — {_line(v['reason'])}")
        lines += [f"  - {'**' + x['text'] + '**' if x['judged'] else x['text']}"
                  for x in v["figures"]]
        if v["rule"]:
            lines.append(f"  - rule: {v['rule']}")
    lines.append("")
    gate, checks = split_gate(report.findings)
    if gate:
        missed = sum(not f.passed for f in gate)
        lines += ["## Thresholds", "", f"{missed} of {len(gate)} missed.", ""]
        lines += [f"- [{'PASSED' if f.passed else 'MISSED'}] {_line(gate_line(f))}" for f in gate]
        lines.append("")
    failed, passed = ordered_findings(checks)
    skipped = skipped_findings(checks)
    counts = {s: sum(f.severity == s for f in failed) for s in reversed(SEVERITIES)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no check failed"
    plural = "" if len(passed) == 1 else "s"
    lines += ["## Findings and checks", "",
              f"{summary}; {len(passed)} check{plural} passed, {len(skipped)} skipped.", ""]
    for f in failed:
        where = f" ({f.scenario})" if f.scenario else ""
        measure = finding_measure(f)
        lines.append(f"- **[{f.severity.upper()}]** {f.check}{where}"
                     + (f": {measure}" if measure else "") + f". {_line(f.why)}"
                     + (f" Fix: {_line(f.fix)}" if f.fix else ""))
    if passed:
        lines.append("- [PASSED] " + ", ".join(f.check for f in passed))
    for f in skipped:
        lines.append(f"- [SKIPPED] {f.check}: {_line(f.why)}")
    lines.append("")
    if report.scenarios:
        lines += ["## Scenarios", ""]
        for kind, header, rows in summary_tables(report.scenarios, report.dataset):
            lines += [f"**{kind}**", "", *_table(header, rows), ""]
    if report.manifest:
        lines += ["## Run", ""]
        for key, value in _manifest_items(report.manifest):
            text = fmt_value(value, limit=200)
            lines.append(f"- {key}: `{text}`" if "sha" in key.lower() else f"- {key}: {text}")
        lines.append("")
    return "\n".join(lines)


__all__ = ["render_markdown", "fmt_number", "fmt_proportion", "fmt_value", "fmt_params",
           "fmt_seconds", "flatten", "ordered_findings", "summary_tables", "eps_header", "describe",
           "finding_measure", "is_proportion", "skipped_findings", "split_gate", "verdict_view",
           "report_verdicts", "gate_line", "threat_matrix"]
