"""The transfer family (issue 14, Deliver 2 in the audit): spec checks before any work, the
transferability matrix with the audited model as its last victim column, exact query accounting on
the audited model, the verdict, and resuming from the store."""

from __future__ import annotations

import json

import pytest

from advkit.audit.runner import active_families
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

SPEC = {
    "title": "transfer",
    "seed": 0,
    "dataset": "breast_cancer",
    "model": {"zoo": "mlp", "epochs": 30},
    "evaluation": {"n_samples": 60},
    "attacks": [],
    "transfer": {"eps": [0.2], "families": ["nn", "logreg", "tree"], "n_seed": 20,
                 "steps": 10},
}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def _write(tmp_path, spec: dict):
    import yaml

    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def test_one_stage_per_budget():
    spec = parse_spec({**SPEC, "transfer": {**SPEC["transfer"], "eps": [0.1, 0.2]}})
    assert [sc.id for f in active_families(spec) for sc in f.plan(spec)] == [
        "transfer/Linf/eps=0.1", "transfer/Linf/eps=0.2"]


@pytest.mark.parametrize("section, words", [
    ({"eps": [0.1], "families": ["nn", "forest"]}, "families"),
    ({"eps": [0.1], "attack": "cw"}, "attack"),
    ({"eps": [0]}, "outside (0, 1]"),
    ({"eps": [0.1, 0.1]}, "repeats"),
    ({"eps": [0.1], "stepz": 3}, "unknown field"),
    ({"eps": "0.1"}, "eps"),
    ([0.1], "valid dictionary"),
])
def test_a_bad_section_fails_when_the_spec_is_read(section, words):
    with pytest.raises(AuditSpecError, match="transfer") as e:
        parse_spec({**SPEC, "transfer": section})
    assert words in str(e.value)


def test_matrix_with_the_audited_model_column_exact_queries_and_resume(tmp_path):
    spec, out = _write(tmp_path, SPEC), tmp_path / "out"
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    (rec,) = [s for s in doc["scenarios"] if s["kind"] == "transfer"]
    m = next(s for s in doc["sections"] if s["title"].startswith("Transfer attacks"))
    table = m["tables"][0]
    assert table["columns"] == ["source", "neural network", "logistic regression",
                                "decision tree", "audited model"]
    assert [r[0] for r in table["rows"]] == ["neural network", "logistic regression",
                                            "decision tree (via substitute)"]
    assert m["plots"][0]["kind"] == "heatmap"
    # the audited model's clean labels come from the audit itself: one query per point and
    # source for the adversarial examples, nothing more
    assert rec["metrics"]["audited_queries"] == 3 * 60
    # an MLP's own-family PGD examples at eps 0.2 (unit scale) transfer to another MLP: the
    # measured rate on this seed is far above the bar (0.97), so the verdict must be vulnerable
    best = rec["metrics"]["best_transfer_success"]
    assert best["value"] >= 0.5 and best["n"] >= 50
    (verdict,) = [v for v in doc["verdicts"] if v["threat"] == "transfer"]
    assert verdict["status"] == "vulnerable"
    assert any(f["check"] == "transfer.audited_model" and f["threat_tag"]["atlas_id"] ==
               "AML.T0043.002" for f in doc["findings"])
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    (rec2,) = [s for s in again["scenarios"] if s["kind"] == "transfer"]
    assert rec2["from_store"] and rec2["metrics"] == rec["metrics"]
