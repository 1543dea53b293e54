"""The watermark family: Adi et al. (2018) trigger-set watermark trained from the spec's recipe,
its claim against an independent model of the same recipe, and its removal attacks, end to end
through ``advkit audit`` (real training on a digits subset, nothing mocked)."""

from __future__ import annotations

import json

import pytest

from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

SPEC = {
    "title": "watermark",
    "seed": 0,
    "dataset": {"name": "digits", "n_train": 400},
    "model": {"zoo": "mlp", "epochs": 15, "lr": 0.003, "batch_size": 64,
              "kwargs": {"hidden": [64]}},
    "evaluation": {"n_samples": 200},
    "watermark": {"k": 30, "repeat": 10, "threshold": 1e-6, "removal": [
        "fine-tune", {"name": "prune", "params": {"rate": 0.5}},
        {"name": "extract", "params": {"queries": 300, "epochs": 5, "min_steps": 100}}]},
}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def _audit(tmp_path, name: str) -> dict:
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / name
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def test_marked_model_is_claimed_an_independent_one_is_not(tmp_path):
    doc, html = _audit(tmp_path, "out")
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    ids = ["watermark/marked", "watermark/independent", "watermark/removal/fine-tune",
           "watermark/removal/prune", "watermark/removal/extract"]
    assert [s for s in sc if s.startswith("watermark/")] == ids
    marked, ind = sc["watermark/marked"], sc["watermark/independent"]
    assert marked["false_claim_probability"] < 1e-6 and marked["claimed"]
    assert ind["false_claim_probability"] > 0.05 and not ind["claimed"]
    assert marked["test_accuracy"]["value"] > 0.8  # the mark leaves a usable model
    for sid in ids[2:]:
        m = sc[sid]
        assert m["claimed"] == (m["false_claim_probability"] < 1e-6)
        assert 0 <= m["agreement_with_marked"]["value"] <= 1
    assert sc["watermark/removal/extract"]["queries"] == 300

    section = next(s for s in doc["sections"]
                   if s["title"] == "Watermark: ownership claims and removal")
    rows = section["tables"][0]["rows"]
    assert [r[0] for r in rows] == ["audited model (unmarked)", "marked", "independent",
                                    "removal: fine-tune", "removal: prune", "removal: extract"]
    assert rows[1][4] == "claimed" and rows[2][4] == "not claimed"
    checks = {f["check"]: f for f in doc["findings"] if f["check"].startswith("watermark.")}
    assert set(checks) == {"watermark.marked.claim", "watermark.independent.false_claim",
                           "watermark.accuracy_cost", "watermark.removal.fine-tune",
                           "watermark.removal.prune", "watermark.removal.extract"}
    assert checks["watermark.marked.claim"]["passed"]
    assert checks["watermark.independent.false_claim"]["passed"]
    assert {f["threat_tag"]["atlas_id"] for f in checks.values()} == {"AML.T0024.002"}
    lines = section["text"].splitlines()
    for key in ("fine-tune", "prune", "extract"):  # one verdict line per removal
        verdict = "survives" if sc[f"watermark/removal/{key}"]["claimed"] else "is removed"
        [line] = [t for t in lines if t.startswith(f"{key} (")]
        assert f"the watermark {verdict} (" in line
    assert "Watermark: ownership claims and removal" in html and "the watermark " in html

    # deterministic from (seed, stage id): a second audit (models from the cache) agrees exactly
    again, _ = _audit(tmp_path, "out2")
    assert {s["id"]: s["metrics"] for s in again["scenarios"]} == sc


BASE = {k: v for k, v in SPEC.items() if k != "watermark"}


@pytest.mark.parametrize("section, needle", [
    ({"k": 0}, "'k'"),
    ({"threshold": 2.0}, "'threshold'"),
    ({"threshold": "small"}, "threshold"),
    ({"repeat": 0}, "'repeat'"),
    ({"copies": 10}, "copies: unknown field"),
    ({"removal": ["distill"]}, "unknown removal attack 'distill'"),
    ({"removal": [{"name": "fine-tune", "params": {"rate": 0.5}}]}, "unknown parameter 'rate'"),
    ({"removal": [{"name": "fine-tune", "params": {"epochs": 0}}]}, "epochs"),
    ({"removal": [{"name": "prune", "params": {"rate": 1.5}}]}, "rate"),
    ({"removal": [{"name": "extract", "params": {"strategy": "psychic"}}]}, "strategy"),
    ({"removal": [{"name": "extract", "params": {"budget": 5}}]}, "unknown parameter 'budget'"),
    ({"removal": [{"name": "extract", "params": {"queries": 0}}]}, "queries"),
    ({"removal": ["prune", "prune"]}, "distinct 'label'"),
    ([1, 2], "watermark: Input should be a valid dictionary"),
])
def test_bad_sections_fail_when_the_spec_is_read(section, needle):
    with pytest.raises(AuditSpecError, match=needle):
        parse_spec({**BASE, "watermark": section})


@pytest.mark.parametrize("section, needle", [
    # (1/10)^5 = 1e-5: even a perfect answer could not be claimed at 1e-6
    ({"k": 5}, "raise k to at least 7"),
    ({"removal": [{"name": "extract", "params": {"queries": 500}}]}, "at most 400"),
])
def test_requests_the_data_cannot_serve_exit_2_before_any_stage(tmp_path, capsys, section,
                                                               needle):
    import yaml

    spec = {**BASE, "model": {**BASE["model"], "epochs": 1}, "watermark": section}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert run(["audit", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_a_model_file_cannot_be_marked():
    with pytest.raises(AuditSpecError, match="cannot retrain"):
        parse_spec({**BASE, "model": {"path": "model.safetensors"}, "watermark": {}})


def _rec(kind, agreements, acc, **extra):
    from advkit.defenses.watermark import false_claim_probability
    from advkit.evaluation.metrics import proportion_of

    return {"id": f"watermark/{extra.pop('sid', kind)}", "kind": kind, "attack": extra.pop(
        "attack", "none"), "label": extra.pop("label", kind), "k": 50, "repeat": 10,
        "agreements": agreements, "n_classes": 10,
        "agreement": proportion_of(agreements, 50).as_dict(),
        "p_value": false_claim_probability(agreements, 50, 10),
        "accuracy": proportion_of(acc, 100).as_dict(), "seconds": 0.0, **extra}


def test_report_rules_judge_each_removal_by_claim_and_accuracy_kept():
    """The rules of advkit.audit.watermark_report on stored records: a claim that survives
    passes, a removal that keeps the accuracy warns, one that wrecks the model passes."""
    from advkit.audit import watermark_report
    from advkit.audit.report import Report
    from advkit.evaluation.metrics import proportion_of

    fid = proportion_of(90, 100).as_dict()
    records = [
        _rec("marked", 50, 95, audited_accuracy=proportion_of(96, 100).as_dict(),
             train={"seed": 0}),
        _rec("independent", 6, 96, train={"seed": 7}),
        _rec("removal", 45, 94, sid="removal/ft", attack="fine-tune", label="ft",
             params={"epochs": 3, "lr": 1e-4}, fidelity=fid),
        _rec("removal", 5, 93, sid="removal/steal", attack="extract", label="steal",
             params={"strategy": "natural"}, queries=1000, fidelity=fid),
        _rec("removal", 6, 30, sid="removal/cut", attack="prune", label="cut",
             params={"rate": 0.9}, fidelity=fid),
    ]
    report = Report(manifest={}, model={}, dataset={})
    watermark_report.add_to(report, records, 1e-6)
    f = {x.check: x for x in report.findings}
    assert f["watermark.removal.ft"].passed and f["watermark.removal.ft"].severity == "info"
    assert not f["watermark.removal.steal"].passed
    assert f["watermark.removal.steal"].severity == "warning"
    assert f["watermark.removal.cut"].passed and "65.0 points" in f["watermark.removal.cut"].why
    assert f["watermark.accuracy_cost"].value == pytest.approx(0.01)
    lines = report.sections[0].text.split("\n\n")[2].splitlines()
    assert [line.split(": the watermark ")[1].split(" (")[0] for line in lines] == [
        "survives", "is removed", "is removed"]
    assert lines[0].startswith("ft, fine-tune (3 epochs")
