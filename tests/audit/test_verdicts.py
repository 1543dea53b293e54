"""A verdict a reviewer can trust: a headline per threat, the worst case done right, checks that
could not run are skipped, and no green badge above a model an attack broke."""

from __future__ import annotations

import json

import pytest

from advkit.audit.report import Finding, Report, ScenarioResult
from advkit.audit.spec import parse_spec
from advkit.audit.verdicts import evasion_verdict
from advkit.cli.main import run
from advkit.errors import AuditSpecError
from advkit.evaluation.metrics import proportion_of
from advkit.report import render_html, render_markdown

SPEC = """
title: verdict
seed: 2
dataset: digits
model: {zoo: mlp, epochs: 3}
evaluation: {n_samples: 40}
attacks:
  - {name: fgsm, eps: [0, 0.1, 0.2]}
  - {name: pgd, eps: [0, 0.1, 0.15, 0.2, 0.3], params: {steps: 10}}
  - {name: deepfool, norm: inf}
ensemble: {eps: [0.1, 0.2], attacks: [pgd], version: custom}
"""


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verdict")
    (tmp / "s.yaml").write_text(SPEC)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
        mp.setenv("CI", "true")
        assert run(["audit", str(tmp / "s.yaml"), "--out", str(tmp / "r")]) == 0
    return (json.loads((tmp / "r" / "report.json").read_text()),
            (tmp / "r" / "report.html").read_text())


def test_broken_model_gets_a_vulnerable_headline_and_no_green_badge(audited):
    doc, html = audited
    assert list(doc)[:3] == ["schema_version", "title", "verdicts"]
    (v,) = doc["verdicts"]
    assert v["threat"] == "evasion" and v["status"] == "vulnerable"
    judged = [f for f in v["figures"] if f["judged"]]
    assert len(judged) == 1 and judged[0]["eps"] == 0.3 and judged[0]["vulnerable"]
    assert {f["eps"] for f in v["figures"]} == {0.1, 0.15, 0.2, 0.3}
    assert all({"ci_low", "ci_high", "n"} <= set(f["robust_accuracy"]) for f in v["figures"])
    assert "NO PROBLEMS FOUND" not in html and "badge passed" not in html
    assert html.index('id="verdict"') < html.index("VULNERABLE") < html.index('id="findings"')


def test_worst_case_only_at_measured_eps_and_below_every_attack(audited):
    doc, _ = audited
    worst = {s["metrics"]["eps"]: s for s in doc["scenarios"] if s["kind"] == "worst_case"}
    assert sorted(worst) == [0.0, 0.1, 0.15, 0.2, 0.3]  # the budgeted eps, nothing interpolated
    singles = [s for s in doc["scenarios"] if s["kind"] in ("evasion", "ensemble")
               and s["metrics"]["eps"] is not None]
    for s in singles:
        w = worst[s["metrics"]["eps"]]
        assert w["metrics"]["robust_accuracy"]["k"] <= s["metrics"]["robust_accuracy"]["k"]
        assert s["id"] in w["params"]["attacks"]
    # at 0.15 only PGD (and DeepFool's norms) ran: the worst case is measured there, not drawn
    assert worst[0.15]["params"]["attacks"] == ["pgd/Linf/eps=0.15", "deepfool/Linf"]
    # DeepFool is included through its norms: a point it broke within eps is not robust
    (df,) = [s for s in doc["scenarios"] if s["id"] == "deepfool/Linf"]
    y_ok = worst[0.0]["per_sample"]["robust"]
    for eps, w in worst.items():
        for i, ok in enumerate(w["per_sample"]["robust"]):
            broke = (y_ok[i] and not df["per_sample"]["robust"][i]
                     and df["per_sample"]["distance"][i] <= eps)
            assert not (ok and broke)


def _points(ra_k: int, clean_k: int = 40, n: int = 40, eps=(0.1, 0.3)):
    return [ScenarioResult(id=f"worst-case/Linf/eps={e:g}", kind="worst_case", attack="worst case",
                           params={"norm": "Linf", "attacks": ["pgd"]}, seconds=0.0,
                           metrics={"eps": e, "clean_accuracy": proportion_of(clean_k, n),
                                    "robust_accuracy": proportion_of(ra_k, n)}) for e in eps]


def _critical():
    return Finding(check="not_zero_at_unbounded", severity="critical", metric="m", value=1.0,
                   threshold=0.01, why="the attack fails", fix="debug it")


def test_verdict_statuses_and_rule_override():
    assert evasion_verdict(_points(30), []).status == "robust"
    assert evasion_verdict(_points(10), []).status == "vulnerable"
    assert evasion_verdict(_points(30), [_critical()]).status == "inconclusive"
    assert evasion_verdict(_points(10), [_critical()]).status == "vulnerable"
    assert evasion_verdict([], []).status == "not assessed"
    assert evasion_verdict(_points(0, clean_k=0), []).status == "not assessed"
    rules = parse_spec({"dataset": "digits", "model": {"zoo": "mlp"},
                        "attacks": [{"name": "pgd", "eps": [0.1, 0.3]}],
                        "verdicts": {"evasion": {"min_ratio_to_clean": 0.2,
                                                 "budgets": {"inf": 0.1}}}}).verdicts.evasion
    v = evasion_verdict(_points(10), [], rules)
    assert v.status == "robust" and [f["eps"] for f in v.figures if f["judged"]] == [0.1]


@pytest.mark.parametrize("verdicts,needle", [
    ({"evasion": {"bound": "middle"}}, "bound"),
    ({"evasion": {"min_ratio_to_clean": 2.0}}, "min_ratio_to_clean"),
    ({"evasion": {"budgets": {"inf": 0.2}}}, "not a budget of the plan"),
    ({"evasion": {"budgets": {"l7": 0.2}}}, "unknown norm"),
    ({"evsion": {}}, "unknown field"),
])
def test_verdict_rules_are_validated(verdicts, needle):
    with pytest.raises(AuditSpecError, match=needle):
        parse_spec({"dataset": "digits", "model": {"zoo": "mlp"},
                    "attacks": [{"name": "pgd", "eps": [0.1]}], "verdicts": verdicts})


def test_skipped_check_is_not_passed_and_renders_as_skipped():
    from advkit.evaluation.checks import skipped

    f = skipped("zero_or_nan_gradients", "the target offers no gradients")
    assert f.skipped and not f.passed and f.status == "skipped"
    report = Report(manifest={}, model={}, dataset={}, findings=[f])
    md = render_markdown(report)
    assert "[SKIPPED] zero_or_nan_gradients" in md and "0 checks passed, 1 skipped" in md
    assert "NOT ASSESSED" in md
    html = render_html(report)
    assert "1 skipped" in html and "badge passed" not in html
