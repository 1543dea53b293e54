"""A new user's tabular audit (issue 11): a CSV of breast_cancer with two immutable features and a
one-hot group, audited with a random forest and a scikit-learn Pipeline through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from advkit.cli.main import run
from advkit.data.tabular import encode_labels, stratified_split

N = 40


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """cancer.csv (raw features, a one-hot ``site`` group of three 0/1 columns, an integer
    ``age``), a random forest and a StandardScaler + LogisticRegression pipeline trained in plain
    scikit-learn on the raw columns of advkit's split, saved with skops."""
    import skops.io as sio
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = tmp_path_factory.mktemp("tabular")
    df = load_breast_cancer(as_frame=True).frame
    df.columns = [c.replace(" ", "_") for c in df.columns]
    rng = np.random.default_rng(0)
    site = rng.integers(0, 3, len(df))
    for i, name in enumerate(("site_a", "site_b", "site_c")):
        df[name] = (site == i).astype(int)
    df["age"] = rng.integers(30, 80, len(df))
    df.to_csv(d / "cancer.csv", index=False)
    x = pd.read_csv(d / "cancer.csv").drop(columns="target").to_numpy()
    codes, _ = encode_labels(df["target"].to_numpy(), source="test")
    tr, te = stratified_split(codes, seed=0)
    rf = RandomForestClassifier(n_estimators=30, random_state=0).fit(x[tr], codes[tr])
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[tr], codes[tr])
    sio.dump(rf, d / "rf.skops")
    sio.dump(pipe, d / "pipe.skops")
    plain = {"rf": float((rf.predict(x[te][:N]) == codes[te][:N]).mean()),
             "pipe": float((pipe.predict(x[te][:N]) == codes[te][:N]).mean())}
    return d, plain


SPEC = """
title: tabular {model}
dataset:
  path: cancer.csv
  label_column: target
  features:
    immutable: [age, mean_radius]
    one_hot: [[site_a, site_b, site_c]]
model: {{path: {model}.skops, trust_pickle: true}}
evaluation: {{n_samples: {n}}}
attacks:
{attacks}
"""


def _audit(folder, model, attacks, capsys):
    d, _ = folder
    spec = d / f"{model}.yaml"
    spec.write_text(SPEC.format(model=model, n=N, attacks=attacks))
    out = d / f"out-{model}"
    code = run(["audit", str(spec), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads((out / "report.json").read_text()), (out / "report.html").read_text()


def _constraints_held(report):
    features = report["dataset"]["features"]
    names = report["dataset"]["feature_names"]
    immutable = [names.index(n) for n in features["immutable"]]
    assert sorted(features["immutable"]) == ["age", "mean_radius"]
    assert features["one_hot"] == [["site_a", "site_b", "site_c"]]
    assert features["integer"] == ["age"]  # an integer column; the one-hot group is a group
    attacked = [s for s in report["scenarios"] if s["per_sample"].get("feature_changes")]
    assert attacked
    moved_any = False
    for s in attacked:
        fc = s["per_sample"]["feature_changes"]
        assert [fc["changed"][j] for j in immutable] == [0, 0], s["id"]
        assert fc["one_hot_broken"] == 0, s["id"]
        moved_any |= sum(fc["changed"]) > 0
    assert moved_any  # the attacks did change the mutable features


def test_random_forest_csv_audit(folder, capsys):
    report, html = _audit(folder, "rf", "  - {name: square, eps: [0.0, 0.1], "
                                        "params: {n_queries: 150}}", capsys)
    _, plain = folder
    clean = [s for s in report["scenarios"] if s["id"] == "square/Linf/eps=0"][0]
    # the forest's clean accuracy is its accuracy in plain scikit-learn on the same split
    assert clean["metrics"]["clean_accuracy"]["value"] == pytest.approx(plain["rf"], abs=1e-12)
    assert report["dataset"]["preprocessing"] == {"kind": "none"}
    _constraints_held(report)
    assert "eps (fraction of each feature&#39;s range)" in html or \
        "eps (fraction of each feature's range)" in html
    assert "Features, bounds and constraints" in html
    # the threat × verdict matrix: the model file's scan and the evasion audit, each with its
    # MITRE ATLAS technique
    assert [v["threat"] for v in report["verdicts"]] == ["supply chain", "evasion"]
    assert [v["tag"]["atlas_id"] for v in report["verdicts"]] == ["AML.T0010.003",
                                                                   "AML.T0043.000"]
    assert "<h2>Threats</h2>" in html and "AML.T0010.003" in html


def test_pipeline_csv_audit(folder, capsys):
    # scaler + logistic regression: exact input gradients, so a white-box attack runs
    report, html = _audit(folder, "pipe", "  - {name: pgd, eps: [0.0, 0.05, 0.1], "
                                          "params: {steps: 20}}", capsys)
    _, plain = folder
    assert "gradients" in report["manifest"]["capabilities"]
    clean = [s for s in report["scenarios"] if s["id"] == "pgd/Linf/eps=0"][0]
    assert clean["metrics"]["clean_accuracy"]["value"] == pytest.approx(plain["pipe"], abs=1e-12)
    _constraints_held(report)
    assert "fraction of each feature" in html
    pgd = [s for s in report["scenarios"] if s["id"] == "pgd/Linf/eps=0.1"][0]
    assert pgd["metrics"]["robust_accuracy"]["value"] < clean["metrics"]["clean_accuracy"]["value"]


def test_zoo_mlp_trains_on_the_raw_columns_and_pgd_keeps_the_constraints(folder, capsys):
    d, _ = folder
    spec = d / "mlp.yaml"
    spec.write_text(SPEC.replace("model: {{path: {model}.skops, trust_pickle: true}}",
                                 "model: {{zoo: mlp, epochs: 15}}").format(
        model="mlp", n=N, attacks="  - {name: pgd, eps: [0.0, 0.05], params: {steps: 10}}"))
    code = run(["audit", str(spec), "--out", str(d / "out-mlp")])
    assert code == 0, capsys.readouterr().err
    report = json.loads((d / "out-mlp" / "report.json").read_text())
    clean = report["scenarios"][0]["metrics"]["clean_accuracy"]["value"]
    assert clean >= 0.85  # the raw areas (up to 4254) are rescaled inside the model
    _constraints_held(report)


def test_unknown_feature_name_is_exit_2(folder, capsys):
    d, _ = folder
    spec = d / "bad.yaml"
    spec.write_text(SPEC.format(model="rf", n=N, attacks="  - {name: square, eps: [0.1]}")
                    .replace("[age, mean_radius]", "[age, mean_radus]"))
    assert run(["audit", str(spec), "--out", str(d / "out-bad")]) == 2
    err = capsys.readouterr().err
    assert "no feature named 'mean_radus'" in err and "Traceback" not in err
