"""The privacy and extraction families (issue 13, audit integration): spec checks before any work,
stable stage ids, an end-to-end audit through the CLI with figures that must hold on an overfit
model (membership AUC above chance, Copycat fidelity rising with queries), resuming from the store,
and exact extraction of scikit-learn models (logistic regression by equation solving, a decision
tree by path finding)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from advkit.audit.runner import active_families
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

SPEC = {
    "title": "privacy",
    "seed": 0,
    "dataset": {"name": "digits", "n_train": 200},
    "model": {"zoo": "mlp", "epochs": 40, "lr": 0.005, "batch_size": 32,
              "kwargs": {"hidden": [128]}},
    "privacy": {"members": 100, "membership": [
        {"name": "loss"}, {"name": "entropy"},
        {"name": "lira", "params": {"n_reference": 2, "variant": "offline"}},
        {"name": "rmia", "params": {"n_reference": 2, "n_population": 50}}]},
    "extraction": {"n_uniform": 200, "attacks": [
        {"name": "copycat", "queries": [20, 200],
         "params": {"strategy": "natural", "epochs": 20, "min_steps": 100}}]},
}


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def _write(tmp_path, spec: dict, name="spec.yaml"):
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec))
    return p


def _ids(spec) -> list[str]:
    return [sc.id for f in active_families(spec) for sc in f.plan(spec)]


def test_stage_ids_are_stable_and_reference_models_shared():
    ids = _ids(parse_spec(SPEC))
    assert ids == ["privacy/references/n=2", "privacy/membership/loss",
                   "privacy/membership/entropy", "privacy/membership/lira",
                   "privacy/membership/rmia", "extraction/copycat/queries=20",
                   "extraction/copycat/queries=200"]


@pytest.mark.parametrize("section,needle", [
    ({"privacy": {"membership": [{"name": "lira", "params": {"n_reference": 1}}]}},
     "LiraSettings: parameter 'n_reference' must be"),
    ({"privacy": {"membership": [{"name": "lira", "params": {"variant": "best"}}]}},
     "parameter 'variant' must be one of"),
    ({"privacy": {"membership": [{"name": "loss", "params": {"score": "margin"}}]}},
     "LossThreshold: parameter 'score' must be one of"),
    ({"privacy": {"membership": [{"name": "rmia", "params": {"gama": 2}}]}},
     "unknown parameter 'gama'"),
    ({"privacy": {"membership": [{"name": "shokri"}]}}, "unknown membership attack 'shokri'"),
    ({"privacy": {"membership": []}}, "membership"),
    ({"privacy": {"membership": [{"name": "loss"}], "members": 5}}, "members"),
    ({"extraction": {"attacks": [{"name": "copycat"}]}}, "copycat needs 'queries'"),
    ({"extraction": {"attacks": [{"name": "copycat", "queries": [0]}]}}, "positive"),
    ({"extraction": {"attacks": [{"name": "copycat", "queries": [10],
                                  "params": {"lr": -1}}]}}, "Copycat: parameter 'lr' must be"),
    ({"extraction": {"attacks": [{"name": "tree"}]}}, "tree cannot apply to this target"),
    ({"extraction": {"attacks": [{"name": "equations", "queries": [10]}]}},
     "remove 'queries'"),
])
def test_bad_sections_fail_when_the_spec_is_read(section, needle):
    base = {k: v for k, v in SPEC.items() if k not in ("privacy", "extraction")}
    with pytest.raises(AuditSpecError) as exc:
        parse_spec({**base, **section})
    assert needle in str(exc.value)


def test_reference_attacks_need_a_recipe(tmp_path):
    base = {k: v for k, v in SPEC.items() if k not in ("privacy", "extraction")}
    with pytest.raises(AuditSpecError, match="cannot retrain"):
        parse_spec({**base, "model": {"path": str(tmp_path / "m.skops")},
                    "privacy": {"membership": [{"name": "rmia"}]}})


def test_audit_end_to_end_then_resumed(tmp_path):
    """An overfit MLP (100 % on 200 training images): every attack scores it above chance, the
    report holds the ROC plot, table, findings with their ATLAS technique and both verdicts; a
    second run reads every stage back and reports the same figures."""
    spec, out = _write(tmp_path, SPEC), tmp_path / "out"
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    for a in ("loss", "entropy", "lira", "rmia"):
        m = sc[f"privacy/membership/{a}"]
        assert m["train_accuracy"] == 1.0 and m["n_members"] == m["n_nonmembers"] == 100
        assert m["auc"] > 0.55, (a, m["auc"])
        t = m["tpr_at_1%_fpr"]
        assert t["ci_low"] <= t["value"] <= t["ci_high"]
    lo, hi = (sc[f"extraction/copycat/queries={q}"] for q in (20, 200))
    assert hi["queries"] == 200 and lo["queries"] == 20
    assert hi["fidelity_test"]["value"] > lo["fidelity_test"]["value"] + 0.1
    titles = {s["title"]: s for s in doc["sections"]}
    roc = titles["Privacy: membership inference"]["plots"][0]
    assert roc["scale"] == "loglog" and len(roc["series"]) == 5  # 4 attacks and chance
    assert "Extraction: model stealing" in titles
    atlas = {f["check"]: f["threat_tag"]["atlas_id"] for f in doc["findings"]
             if f["threat"] in ("privacy", "extraction")}
    assert atlas["privacy.membership.rmia"] == "AML.T0024.000"
    assert atlas["extraction.copycat"] == "AML.T0024.002"
    assert {v["threat"] for v in doc["verdicts"]} == {"privacy", "extraction"}
    _check_slices(out, titles["Privacy: membership inference"])
    again_out = run(["audit", str(spec), "--out", str(out)])
    again = json.loads((out / "report.json").read_text())
    assert again_out == 0 and again["manifest"]["scenarios_run"] == 0
    assert [s["metrics"] for s in again["scenarios"]] == [s["metrics"] for s in doc["scenarios"]]


def _check_slices(out, section):
    """Each membership record holds its judged score's leakage per class and on the
    misclassified slice; the report shows it as one collapsed table per attack."""
    import sqlite3

    db = sqlite3.connect(out / ".advkit-progress.sqlite")
    recs = {sid: json.loads(res) for sid, res in
            db.execute("SELECT scenario_id, result FROM scenarios")}
    db.close()
    tables = [t for t in section["tables"] if "leakage per class" in t["title"]]
    assert len(tables) == 4 and all(t["collapsed"] for t in tables)
    for a, t in zip(("loss", "entropy", "lira", "rmia"), tables, strict=True):
        sl = recs[f"privacy/membership/{a}"]["slices"]
        classes = sl["classes"]
        assert sum(c["n_members"] for c in classes) == sum(c["n_nonmembers"] for c in classes) \
            == 100
        # the model is 100 % accurate on its members: no misclassified member, so no figure
        assert sl["misclassified"]["n_members"] == 0 and sl["misclassified"]["too_few"]
        assert sl["correct"]["n_members"] == 100
        assert [r[0] for r in t["rows"]] == [f"class {c['class']}" for c in classes] + [
            "misclassified", "correctly classified"]
        for c, row in zip(classes, t["rows"], strict=False):
            assert row[1:3] == [c["n_members"], c["n_nonmembers"]]
            assert (row[3] == "too few points") == c["too_few"]
            if not c["too_few"]:
                assert row[3] == pytest.approx(c["auc"])
    html = (out / "report.html").read_text()
    assert html.count('<details class="detail-table">') >= 4


@pytest.fixture(scope="module")
def sk_models(tmp_path_factory):
    """A binary logistic regression and a depth-3 decision tree on breast_cancer's raw features
    (advkit's split), saved with skops."""
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from advkit.data import load

    d = tmp_path_factory.mktemp("sk")
    ds = load("breast_cancer")
    x, y = ds.x_train.numpy(), ds.y_train.numpy()
    sio.dump(LogisticRegression(max_iter=5000).fit(x, y), d / "lr.skops")
    tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y)
    # every leaf has its own class distribution: the probabilities tell the leaves apart
    leaves = tree.tree_.value[tree.tree_.children_left == -1]
    assert len(np.unique(leaves, axis=0)) == tree.get_n_leaves()
    sio.dump(tree, d / "tree.skops")
    return d


@pytest.mark.parametrize("model,attack", [("lr", "equations"), ("tree", "tree")])
def test_scikit_learn_models_are_extracted_exactly(sk_models, tmp_path, model, attack):
    spec = {"dataset": "breast_cancer", "supply_chain": False,
            "model": {"path": str(sk_models / f"{model}.skops"), "trust_pickle": True},
            "extraction": {"n_uniform": 500, "attacks": [{"name": attack}]}}
    out = tmp_path / "out"
    assert run(["audit", str(_write(tmp_path, spec)), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    m = doc["scenarios"][0]["metrics"]
    assert m["fidelity_test"]["value"] == 1.0 and m["fidelity_uniform"]["value"] == 1.0
    assert m["queries"] > 0
    if attack == "equations":
        assert m["queries"] == 31  # d + 1 for a binary logistic regression on 30 features


def test_an_attack_that_cannot_apply_to_the_loaded_model_is_refused(sk_models, tmp_path, capsys):
    spec = {"dataset": "breast_cancer", "supply_chain": False,
            "model": {"path": str(sk_models / "lr.skops"), "trust_pickle": True},
            "extraction": {"attacks": [{"name": "tree"}]}}
    assert run(["audit", str(_write(tmp_path, spec)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "tree cannot apply to this target (logistic)" in err and "copycat, equations" in err
