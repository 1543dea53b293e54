"""The privacy_defenses family: membership inference and Copycat re-run against DP-SGD, the
recipe's regularisation knobs and output hardening, with the utility-versus-leakage plots."""

from __future__ import annotations

import json

import pytest

from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

pytest.importorskip("opacus")

# an MLP that overfits 150 digits (100 % train accuracy), as in tests/defenses/test_dp.py
SPEC = {
    "title": "privacy defenses",
    "seed": 0,
    "dataset": {"name": "digits", "n_train": 150},
    "model": {"zoo": "mlp", "epochs": 40, "lr": 0.01, "batch_size": 75,
              "kwargs": {"hidden": [256]}},
    "privacy": {"members": 150, "membership": [{"name": "loss"}, {"name": "entropy"}]},
    "extraction": {"n_uniform": 200, "attacks": [
        {"name": "copycat", "queries": [200], "params": {"epochs": 10, "min_steps": 50}}]},
    "privacy_defenses": {"defenses": [
        {"name": "dp-sgd", "params": {"noise_multiplier": 16.0, "max_grad_norm": 1.0}},
        {"name": "early-stopping", "params": {"epochs": 5}},
        {"name": "labels-only"}]},
}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def test_audit_reruns_privacy_and_extraction_against_each_defense(tmp_path):
    import yaml

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "out"
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    for key in ("dp-sgd", "early-stopping", "labels-only"):
        for tail in ("model", "membership/loss", "membership/entropy",
                     "extraction/copycat/queries=200"):
            assert f"privacy_defenses/{key}/{tail}" in sc
    dp_model = sc["privacy_defenses/dp-sgd/model"]
    eps = dp_model["accountant_epsilon"]
    assert 0 < eps < 2
    assert "accountant_epsilon" not in sc["privacy_defenses/early-stopping/model"]
    for a in ("loss", "entropy"):
        plain, dp = sc[f"privacy/membership/{a}"], sc[f"privacy_defenses/dp-sgd/membership/{a}"]
        assert dp["epsilon_lower_bound"] <= eps < plain["epsilon_lower_bound"]
        assert dp["auc"] < plain["auc"]
    # labels only: the same predictions, so the same accuracy as the audited model
    plain_acc = sc["extraction/copycat/queries=200"]["victim_accuracy"]["value"]
    assert sc["privacy_defenses/labels-only/model"]["test_accuracy"]["value"] == plain_acc
    section = next(s for s in doc["sections"]
                   if s["title"] == "Privacy defenses: utility against leakage")
    table = section["tables"][0]
    assert [r[0] for r in table["rows"]] == ["none (audited model)", "dp-sgd", "early-stopping",
                                             "labels-only"]
    assert [p["kind"] for p in section["plots"]] == ["scatter", "scatter"]
    assert [len(p["series"]) for p in section["plots"]] == [4, 4]
    checks = {f["check"]: f for f in doc["findings"]}
    bound = checks["privacy_defenses.dp-sgd.epsilon"]
    assert bound["passed"] and bound["threshold"] == pytest.approx(eps)
    assert checks["privacy_defenses.dp-sgd.membership"]["passed"]
    assert checks["privacy_defenses.dp-sgd.membership"]["threat_tag"]["atlas_id"] == "AML.T0024.000"
    assert checks["privacy_defenses.labels-only.extraction"]["threat_tag"]["atlas_id"] == \
        "AML.T0024.002"
    html = (out / "report.html").read_text()
    assert "Utility against membership leakage" in html


BASE = {k: v for k, v in SPEC.items() if k != "privacy_defenses"}


@pytest.mark.parametrize("defenses, needle", [
    ([{"name": "dropout"}], "unknown privacy defense"),
    ([{"name": "dp-sgd", "params": {"noise_multiplier": -1}}], "noise_multiplier"),
    ([{"name": "early-stopping", "params": {"epochs": 40}}], "fewer than the recipe"),
    ([{"name": "weight-decay", "params": {"decay": 0.1}}], "weight_decay"),
    ([{"name": "output-rounding", "params": {"decimals": -3}}], "decimals"),
    ([{"name": "labels-only"}, {"name": "labels-only"}], "distinct 'label'"),
])
def test_bad_entries_fail_when_the_spec_is_read(defenses, needle):
    with pytest.raises(AuditSpecError, match=needle):
        parse_spec({**BASE, "privacy_defenses": {"defenses": defenses}})


def test_training_defenses_need_a_recipe_and_something_to_rerun():
    with pytest.raises(AuditSpecError, match="cannot retrain"):
        parse_spec({**BASE, "model": {"path": "model.safetensors"},
                    "privacy": {"membership": [{"name": "loss"}]}, "extraction": None,
                    "privacy_defenses": {"defenses": [{"name": "dp-sgd"}]}})
    with pytest.raises(AuditSpecError, match="has none"):
        parse_spec({**{k: v for k, v in BASE.items() if k not in ("privacy", "extraction")},
                    "privacy_defenses": {"defenses": [{"name": "labels-only"}]}})


def test_a_dp_audited_model_reports_its_epsilon_beside_the_bounds(tmp_path):
    import yaml

    spec = {**{k: SPEC[k] for k in ("title", "seed", "dataset")},
            "model": {**SPEC["model"], "epochs": 5, "dp": {"noise_multiplier": 4.0}},
            "privacy": {"members": 100, "membership": [{"name": "loss"}]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert run(["audit", str(path), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    dp = doc["model"]["dp"]
    assert dp["noise_multiplier"] == 4.0 and dp["epsilon"] > 0 and dp["steps"] > 0
    text = next(s for s in doc["sections"] if s["title"] == "Privacy: membership inference")
    body = json.dumps(text)
    assert f"the accountant's epsilon is {dp['epsilon']:.2f}" in body and "(within it)" in body


LIRA = {"name": "lira", "params": {"n_reference": 2, "variant": "offline"}}


def _plan(spec: dict) -> dict:
    from advkit.audit.runner import active_families

    parsed = parse_spec(spec)
    return {sc.id: sc for f in active_families(parsed) for sc in f.plan(parsed)}


def test_lira_references_follow_the_defense_kind():
    """A training defense trains its own references with the defended recipe; output hardening
    keeps the privacy family's references (only the answers change)."""
    spec = {**BASE, "extraction": None,
            "privacy": {"members": 150, "membership": [{"name": "loss"}, LIRA]},
            "privacy_defenses": {"defenses": [
                {"name": "dp-sgd", "params": {"noise_multiplier": 16.0}},
                {"name": "weight-decay", "params": {"weight_decay": 0.01}},
                {"name": "output-rounding", "params": {"decimals": 1}}]}}
    plan = _plan(spec)
    plain = plan["privacy/membership/lira"].params["recipe"]
    for key, knob in (("dp-sgd", "dp"), ("weight-decay", "weight_decay")):
        refs = plan[f"privacy_defenses/{key}/references/n=2"]
        lira = plan[f"privacy_defenses/{key}/membership/lira"]
        assert refs.kind == "references" and refs.deps == ()
        assert refs.params["reference_recipe"] == lira.params["reference_recipe"] \
            == lira.params["recipe"] != plain
        assert refs.params["reference_recipe"].get(knob) != plain.get(knob)
        assert lira.deps == (f"privacy_defenses/{key}/model", refs.id)
    assert plan["privacy_defenses/dp-sgd/references/n=2"].params["reference_recipe"]["dp"][
        "noise_multiplier"] == 16.0
    out = plan["privacy_defenses/output-rounding/membership/lira"]
    assert out.params["recipe"] is None and out.params["reference_recipe"] == plain
    assert out.deps == ("privacy_defenses/output-rounding/model", "privacy/references/n=2")
    assert "privacy_defenses/output-rounding/references/n=2" not in plan


def test_lira_reruns_against_output_rounding_and_is_not_applicable_to_labels(tmp_path):
    import yaml

    spec = {**{k: SPEC[k] for k in ("title", "seed", "dataset", "model")},
            "privacy": {"members": 150, "membership": [{"name": "loss"}, LIRA]},
            "privacy_defenses": {"defenses": [
                {"name": "output-rounding", "params": {"decimals": 1}}, {"name": "labels-only"}]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert run(["audit", str(path), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in doc["scenarios"]}
    plain = sc["privacy/membership/lira"]["metrics"]
    rounded = sc["privacy_defenses/output-rounding/membership/lira"]["metrics"]
    assert 0.5 < rounded["auc"] < plain["auc"], (rounded["auc"], plain["auc"])
    assert rounded["tpr_at_1%_fpr"]["n"] == 150
    labels = sc["privacy_defenses/labels-only/membership/lira"]
    assert labels["params"]["not_applicable"] == "not applicable: needs scores"
    assert labels["metrics"]["auc"] is None
    assert sc["privacy_defenses/labels-only/membership/loss"]["metrics"]["auc"] is not None
    section = next(s for s in doc["sections"]
                   if s["title"] == "Privacy defenses: utility against leakage")
    assert "lira against labels-only: not applicable: needs scores" in section["text"]
    assert [r[0] for r in section["tables"][0]["rows"]] == [
        "none (audited model)", "output-rounding", "labels-only"]


def test_lira_against_dp_sgd_uses_references_trained_with_dp_sgd(tmp_path):
    import sqlite3

    import yaml

    spec = {**{k: SPEC[k] for k in ("title", "seed", "dataset")},
            "model": {**SPEC["model"], "epochs": 15},  # fewer DP-SGD steps: a faster test
            "privacy": {"members": 150, "membership": [LIRA]},
            "privacy_defenses": {"defenses": [
                {"name": "dp-sgd", "params": {"noise_multiplier": 16.0, "max_grad_norm": 1.0}}]}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert run(["audit", str(path), "--out", str(out)]) == 0
    db = sqlite3.connect(out / ".advkit-progress.sqlite")
    recs = {sid: json.loads(r) for sid, r in db.execute("SELECT scenario_id, result FROM scenarios")}
    db.close()
    refs = recs["privacy_defenses/dp-sgd/references/n=2"]
    assert refs["n_reference"] == 2 and refs["pool"] == 300
    assert "trained with DP-SGD" in " ".join(refs["notes"])
    assert refs["cache"] != recs["privacy/references/n=2"]["cache"]
    # DP-SGD with noise 16 keeps the references near chance on their own members too
    assert refs["member_accuracy"] < recs["privacy/references/n=2"]["member_accuracy"]
    lira = recs["privacy_defenses/dp-sgd/membership/lira"]
    assert lira["reference_cache"] == refs["cache"]
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    eps = sc["privacy_defenses/dp-sgd/model"]["accountant_epsilon"]
    dp = sc["privacy_defenses/dp-sgd/membership/lira"]
    assert dp["epsilon_lower_bound"] <= eps
    assert dp["auc"] < sc["privacy/membership/lira"]["auc"]
