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
