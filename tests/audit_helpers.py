"""Run an audit spec file in-process and read what must not depend on where the model runs (shared
by the audits of a model behind an API and of an exported ONNX file)."""

from __future__ import annotations

import json
import warnings

from advkit.audit.runner import run_audit
from advkit.audit.spec import load_spec


def audit_file(spec_path, out):
    """The Report of the spec at ``spec_path``, written to ``out`` (warnings silenced: trust
    flags, cost estimates)."""
    spec, sha = load_spec(spec_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_audit(spec, out_dir=out, spec_sha256=sha, progress=False)


def outcome(report: dict) -> tuple:
    """Verdicts and every scenario's measured values: what must not depend on where the model
    runs."""
    return ([(v["threat"], v["status"]) for v in report["verdicts"]],
            [(s["id"], json.dumps(s["metrics"], sort_keys=True)) for s in report["scenarios"]])
