"""The supply-chain family: the model file's scan, run as the first stage whenever the model comes
from a file (AML.T0010 ML Supply Chain Compromise; AML.T0011.000 unsafe ML artifacts).

The scan is the one ``advkit scan`` runs (``advkit.models.scan``): the format by content, every
pickle's imports, a TorchScript or torch.export program's operators against the allow-list. A
file the scan calls dangerous never gets this far unless the spec allowed it explicitly
(``trust_pickle`` with ``allow_dangerous``); then the report says so as a critical finding.
``supply_chain: false`` in the spec turns the stage off.
"""

from __future__ import annotations

from pathlib import Path

from advkit.audit.families.base import AuditContext, Family, family
from advkit.audit.plan import Scenario
from advkit.audit.report import Finding, Report, ScenarioResult, Section, Table, Verdict
from advkit.errors import AuditSpecError
from advkit.threat_tags import tag

VERDICT = {"safe": "robust", "requires-trust": "inconclusive", "dangerous": "vulnerable",
           "unknown": "inconclusive"}
SEVERITY = {"safe": "info", "requires-trust": "warning", "dangerous": "critical",
            "unknown": "warning"}


def model_files(spec) -> list[str]:
    """The files the audited model is read from (none for a zoo model trained by advkit)."""
    m = spec.model
    return [str(p) for p in (m.path, m.weights) if p is not None]


@family
class SupplyChainFamily(Family):
    name = "supply_chain"
    order = 10
    threat = tag("AML.T0010.003", "black box", related=("AML.T0011.000",))

    def parse(self, data, *, source: str):
        if not isinstance(data, bool):
            raise AuditSpecError(f"{source}: supply_chain: expected true or false, got "
                                 f"{type(data).__name__}")
        return data

    def active(self, spec) -> bool:
        on = self.section(spec)
        return on is not False and bool(model_files(spec))

    def plan(self, spec) -> list[Scenario]:
        return [Scenario(f"supply-chain/scan/{Path(p).name}", "scan", "none", None,
                         {"path": p}, kind="scan", family=self.name) for p in model_files(spec)]

    def key_inputs(self, sc: Scenario, ctx: AuditContext) -> dict:
        from advkit.models.scan import sha256_file

        p = Path(sc.params["path"])
        return {"file_sha256": sha256_file(p) if p.is_file() else None}

    def run(self, sc: Scenario, ctx: AuditContext, deps) -> dict:
        from advkit.models.scan_tree import scan_tree

        tree = scan_tree(sc.params["path"])
        results = [r.as_dict() for r in tree.results]
        worst = max((r["verdict"] for r in results), key=list(VERDICT).index, default="unknown")
        return {"id": sc.id, "kind": "scan", "path": sc.params["path"], "verdict": worst,
                "files": results, "skipped": [[str(p), why] for p, why in tree.skipped],
                "seconds": 0.0}

    def results(self, records, ctx: AuditContext) -> list[ScenarioResult]:
        return [ScenarioResult(id=r["id"], kind="supply_chain", attack="model file scan",
                               params={"path": r["path"]},
                               metrics={"files": len(r["files"]),
                                        "dangerous": sum(f["verdict"] == "dangerous"
                                                         for f in r["files"])},
                               seconds=r["seconds"], from_store=bool(r.get("from_store")))
                for r in records]

    def report(self, report: Report, records, ctx: AuditContext) -> None:
        rows, worst = [], "safe"
        for r in records:
            for f in r["files"]:
                why = "; ".join([f"{g}: {w}" for g, w in f["dangerous"].items()] + f["issues"])
                rows.append([f["path"], f["format"], f["verdict"], why or "–"])
            worst = max(worst, r["verdict"], key=list(VERDICT).index)
            if r["verdict"] != "safe":
                report.findings.append(Finding(
                    check="model_file_scan", severity=SEVERITY[r["verdict"]], metric="",
                    value=None, threshold=None, threat="supply_chain", scenario=r["id"],
                    why=f"the model file {r['path']} scans as {r['verdict']}: loading it runs "
                        "code chosen by whoever wrote it" if r["verdict"] != "unknown" else
                        f"the model file {r['path']} could not be identified",
                    fix="re-save the model as safetensors (advkit convert) and audit that"))
            else:
                report.findings.append(Finding(
                    check="model_file_scan", severity="info", metric="", value=None,
                    threshold=None, threat="supply_chain", scenario=r["id"], passed=True,
                    why=f"the model file {r['path']} loads without running code from it",
                    fix="none needed"))
        report.verdicts.append(Verdict(
            threat="supply chain", status=VERDICT[worst],
            rule={"text": "vulnerable when a model file carries imports or operators that run "
                          "code when it loads (advkit scan); inconclusive when it needs trust"},
            reason={"safe": "the model file loads without running code from it",
                    "requires-trust": "the model file needs trust to load: it can run code",
                    "dangerous": "the model file carries imports that run code when it loads",
                    "unknown": "the model file's format could not be identified"}[worst]))
        report.sections.append(Section(
            title="Supply chain: the model file", text="Each file the model was read from, "
            "scanned without loading it (advkit scan): its format by content and whether "
            "loading it can run code.", tables=[Table(
                columns=["file", "format", "verdict", "why"], rows=rows)]))
