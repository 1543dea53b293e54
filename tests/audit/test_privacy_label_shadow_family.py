"""The privacy family's label-only (Choquette-Choo et al. 2021) and shadow (Shokri et al. 2017)
membership attacks: spec checks when the spec is read, stage ids, and an audit through the CLI
whose records hold the label queries and whose report lists both attacks."""

from __future__ import annotations

import json

import pytest
import yaml

from advkit.audit.runner import active_families
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

BASE = {"title": "privacy", "seed": 0, "dataset": {"name": "digits", "n_train": 200},
        "model": {"zoo": "mlp", "epochs": 40, "lr": 0.005, "batch_size": 32,
                  "kwargs": {"hidden": [128]}}}
MEMBERSHIP = [{"name": "label-only"},
              {"name": "label-only", "label": "boundary",
               "params": {"variant": "boundary", "max_queries": 100}},
              {"name": "shadow", "params": {"n_reference": 2, "model": "logistic"}}]


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def test_stage_ids():
    spec = parse_spec({**BASE, "privacy": {"members": 100, "membership": MEMBERSHIP}})
    ids = [sc.id for f in active_families(spec) for sc in f.plan(spec)]
    assert ids == ["privacy/references/n=2", "privacy/membership/label-only",
                   "privacy/membership/boundary", "privacy/membership/shadow"]


@pytest.mark.parametrize("entry,needle", [
    ({"name": "label-only", "params": {"variant": "gap"}},
     "LabelOnly: parameter 'variant' must be one of"),
    ({"name": "label-only", "params": {"n_reference": 4}}, "unknown parameter 'n_reference'"),
    ({"name": "shadow", "params": {"n_reference": 1}},
     "ShadowSettings: parameter 'n_reference' must be"),
    ({"name": "shadow", "params": {"model": "svm"}}, "Shokri: parameter 'model' must be one of"),
])
def test_bad_entries_fail_when_the_spec_is_read(entry, needle):
    with pytest.raises(AuditSpecError) as exc:
        parse_spec({**BASE, "privacy": {"membership": [entry]}})
    assert needle in str(exc.value)


def test_label_only_needs_no_recipe_and_shadow_does(tmp_path):
    model = {"path": str(tmp_path / "m.skops")}
    parse_spec({**BASE, "model": model, "privacy": {"membership": [{"name": "label-only"}]}})
    with pytest.raises(AuditSpecError, match="cannot retrain"):
        parse_spec({**BASE, "model": model, "privacy": {"membership": [{"name": "shadow"}]}})


def test_audit_records_queries_and_reports_both(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "privacy": {"members": 100,
                                                        "membership": MEMBERSHIP}}))
    out = tmp_path / "out"
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in doc["scenarios"]}
    aug, bnd, sh = (sc[f"privacy/membership/{k}"] for k in ("label-only", "boundary", "shadow"))
    assert aug["params"]["variant"] == "augmentation" and bnd["params"]["variant"] == "boundary"
    assert aug["metrics"]["queries"] == 200 * 5  # 4 translations and the source, per point
    assert 200 < bnd["metrics"]["queries"] <= 200 * 100
    assert "queries" not in sh["metrics"]
    for s in (aug, bnd, sh):
        assert s["metrics"]["train_accuracy"] == 1.0 and s["metrics"]["auc"] > 0.5
    sec = next(s for s in doc["sections"] if s["title"] == "Privacy: membership inference")
    assert "label-only (Choquette-Choo et al. 2021)" in sec["text"]
    assert "shadow models (Shokri et al. 2017)" in sec["text"]
    assert "(label-only: its predicted labels only, 1,000 label queries)" in sec["text"]
    rows = {(r[0], r[1]) for r in sec["tables"][0]["rows"]}
    assert {("label-only", "augmentation (judged)"), ("boundary", "boundary (judged)"),
            ("shadow", "shadow (judged)")} <= rows
    tags = {f["check"]: f["threat_tag"] for f in doc["findings"]}
    assert tags["privacy.membership.shadow"]["atlas_id"] == "AML.T0024.000"
