"""SARIF 2.1.0 for ``advkit scan`` (code-scanning dashboards read it): one run, tool ``advkit``,
one result per scanned file that is not safe. Formats only; the verdicts come from the scan."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from advkit.models.scan import ScanResult
from advkit.models.scan_tree import TreeScan, reasons

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_RULES = {
    "dangerous": ("error", "Loading this model file runs code that no model needs (commands, "
                           "files, network, code evaluation), or the scan could not read it all."),
    "requires-trust": ("warning", "Loading this model file runs pickle code (or builds types "
                                  "skops does not trust); load it only if you trust its source, "
                                  "or convert it with `advkit convert`."),
    "unknown": ("warning", "The file is not a model format advkit recognizes by its content, or "
                           "it could not be read, so nothing vouches for it."),
}


def _uri(path: Path) -> str:
    return path.as_uri() if path.is_absolute() else quote(path.as_posix())


def _result(res: ScanResult) -> dict:
    level, _ = _RULES[res.verdict]
    why = "; ".join(reasons(res)) or res.verdict
    return {
        "ruleId": f"advkit.model.{res.verdict}",
        "level": level,
        "message": {"text": f"{res.path} ({res.format}) is {res.verdict}: {why}"},
        "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(res.path)}}}],
        "properties": {"format": res.format, "sha256": res.sha256},
    }


def to_sarif(tree: TreeScan, *, version: str) -> dict:
    """The SARIF log (a JSON-ready dict) of ``tree``; skipped paths become notifications."""
    notes = [{"level": "warning", "message": {"text": f"skipped {p}: {why}"},
              "locations": [{"physicalLocation": {"artifactLocation": {"uri": _uri(p)}}}]}
             for p, why in tree.skipped]
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "advkit", "version": version,
                "rules": [{"id": f"advkit.model.{v}", "shortDescription": {"text": text},
                           "defaultConfiguration": {"level": level}}
                          for v, (level, text) in _RULES.items()],
            }},
            "invocations": [{"executionSuccessful": True,
                             "toolExecutionNotifications": notes}],
            "results": [_result(r) for r in tree.results if r.verdict != "safe"],
        }],
    }
