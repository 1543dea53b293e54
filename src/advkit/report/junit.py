"""JUnit XML for CI systems: one test case per threshold and per finding of a ``Report``.

Two suites: ``advkit.thresholds`` (the ``fail_under`` gate; a missed threshold is a ``<failure>``)
and ``advkit.checks`` (every other finding; a failed critical one is a ``<failure>``, a check that
could not run is ``<skipped>``, a failed warning or info passes with its text in ``<system-out>``).
Renderers only format: the verdicts are in the findings already.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from advkit.audit.report import Finding, Report
from advkit.report.json import write_text_atomic
from advkit.report.markdown import finding_measure, gate_line, report_verdicts, split_gate

_BAD_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _x(text) -> str:
    """Text safe for XML 1.0 (control characters made visible)."""
    return _BAD_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _suite(root: ET.Element, name: str) -> ET.Element:
    return ET.SubElement(root, "testsuite", name=name)


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(name), time="0")


def _finding_case(suite: ET.Element, f: Finding) -> str:
    name = f.check + (f" [{f.scenario}]" if f.scenario else "")
    case = _case(suite, f"advkit.{f.threat}", name)
    text = " ".join(x for x in (finding_measure(f), f.why, f"Fix: {f.fix}" if f.fix else "") if x)
    if getattr(f, "skipped", False):
        ET.SubElement(case, "skipped", message=_x(f.why))
        return "skipped"
    if not f.passed and f.severity == "critical":
        fail = ET.SubElement(case, "failure", message=_x(f"{f.check}: {f.why}"),
                             type=f.severity)
        fail.text = _x(text)
        return "failure"
    if not f.passed:
        ET.SubElement(case, "system-out").text = _x(f"{f.severity.upper()}: {text}")
    return "ok"


def render_junit(report: Report) -> str:
    """The report's thresholds and findings as a JUnit XML document (a string)."""
    root = ET.Element("testsuites", name=_x(f"advkit audit: {report.title}"))
    gate, checks = split_gate(report.findings)
    totals = {"tests": 0, "failures": 0, "skipped": 0}
    for name, findings in (("advkit.thresholds", gate), ("advkit.checks", checks)):
        suite = _suite(root, name)
        counts = {"tests": 0, "failures": 0, "skipped": 0}
        for f in findings:
            if name == "advkit.thresholds":
                case = _case(suite, "advkit.thresholds", f.metric)
                outcome = "ok"
                if not f.passed:
                    fail = ET.SubElement(case, "failure", message=_x(gate_line(f)),
                                         type="threshold")
                    fail.text = _x(gate_line(f))
                    outcome = "failure"
            else:
                outcome = _finding_case(suite, f)
            counts["tests"] += 1
            counts["failures"] += outcome == "failure"
            counts["skipped"] += outcome == "skipped"
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("errors", "0")
    props = ET.SubElement(root[0], "properties")
    for v in report_verdicts(report):
        ET.SubElement(props, "property", name=_x(f"verdict.{v['threat']}"),
                      value=_x(v["label"].lower()))
    root[0].remove(props)
    root[0].insert(0, props)
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("errors", "0")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: Report, path: str | os.PathLike) -> Path:
    """Write ``render_junit(report)`` to ``path`` atomically (parent folders are created)."""
    return write_text_atomic(Path(path), render_junit(report))


__all__ = ["render_junit", "write_junit"]
