"""CI gating that cannot lie: metric directions, interval bounds, minimum-norm attacks answering
@eps thresholds, spec errors before any training, the report written before the gate decides,
and JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from advkit.audit.gate import check_thresholds, evaluate_thresholds, parse_threshold
from advkit.audit.plan import make_plan
from advkit.audit.report import Report, ScenarioResult
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError
from advkit.evaluation.metrics import proportion_of

SPEC = """
title: gate
seed: 1
dataset: digits
model: {{zoo: mlp, epochs: 3}}
evaluation: {{n_samples: 40}}
attacks:
  - {{name: pgd, eps: [0, 0.1, 0.2], params: {{steps: 5}}}}
  - {{name: deepfool, norm: inf}}
{extra}
"""


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def _spec(tmp_path, extra=""):
    p = tmp_path / "s.yaml"
    p.write_text(SPEC.format(extra=extra))
    return p


def _no_training(monkeypatch):
    import advkit.models.cache as cache

    def boom(*a, **k):
        raise AssertionError("training was reached")

    monkeypatch.setattr(cache, "trained_zoo_model", boom)


# ---------------------------------------------------------------- parsing, directions


def test_threshold_syntax_and_directions():
    t = parse_threshold("robust_accuracy@0.1/l2:lower", 0.5)
    assert (t.metric, t.eps, t.norm, t.bound, t.direction) == ("robust_accuracy", 0.1, "L2",
                                                                "lower", "at least")
    asr = parse_threshold("attack_success_rate@0.1", 0.3)
    assert asr.direction == "at most" and asr.missed(0.9) and not asr.missed(0.2)
    for key, value, needle in [("robust_acuracy@0.1", 0.5, "unknown metric"),
                               ("robust_accuracy@0.1:middle", 0.5, "unknown bound"),
                               ("robust_accuracy@x", 0.5, "not a budget"),
                               ("attack_success_rate", 30, "proportion"),
                               ("clean_accuracy@0.1", 0.9, "does not depend")]:
        with pytest.raises(AuditSpecError, match=needle):
            parse_threshold(key, value)


def _report(asr_k: int) -> Report:
    sc = ScenarioResult(id="worst-case/Linf/eps=0.1", kind="worst_case", attack="worst case",
                        params={"norm": "Linf"}, seconds=0.0,
                        metrics={"eps": 0.1, "clean_accuracy": proportion_of(50, 50),
                                 "robust_accuracy": proportion_of(50 - asr_k, 50),
                                 "attack_success_rate": proportion_of(asr_k, 50)})
    return Report(manifest={}, model={}, dataset={}, scenarios=[sc])


def test_at_most_metric_fails_when_success_is_high_and_bounds_are_used():
    high = evaluate_thresholds(_report(45), {"attack_success_rate@0.1": 0.3})[0]
    assert not high.passed and high.value == pytest.approx(0.9)
    assert evaluate_thresholds(_report(5), {"attack_success_rate@0.1": 0.3})[0].passed
    # 30/50 = 0.6 >= 0.55, but the interval's lower bound is below 0.55
    r = _report(20)
    assert evaluate_thresholds(r, {"robust_accuracy@0.1": 0.55})[0].passed
    assert not evaluate_thresholds(r, {"robust_accuracy@0.1:lower": 0.55})[0].passed
    assert evaluate_thresholds(r, {"robust_accuracy@0.1:upper": 0.7})[0].passed


def test_budget_not_in_plan_is_a_spec_error():
    spec = parse_spec({"dataset": "digits", "model": {"zoo": "mlp"},
                       "attacks": [{"name": "pgd", "eps": [0.1, 0.2]}]})
    plan = make_plan(spec)
    check_thresholds([parse_threshold("robust_accuracy@0.2", 0.5)], plan)
    with pytest.raises(AuditSpecError, match="eps 0.15 is not a budget"):
        check_thresholds([parse_threshold("robust_accuracy@0.15", 0.5)], plan)
    with pytest.raises(AuditSpecError, match="no attack of the plan runs in L2"):
        check_thresholds([parse_threshold("robust_accuracy@0.1/l2", 0.5)], plan)
    with pytest.raises(AuditSpecError, match="fail_under"):
        parse_spec({"dataset": "digits", "model": {"zoo": "mlp"},
                    "attacks": [{"name": "pgd", "eps": [0.1]}],
                    "fail_under": {"robust_accuracy@0.3": 0.5}})


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("flag,needle", [
    ("robust_acuracy@0.1=0.5", "unknown metric"),
    ("robust_accuracy@0.15=0.5", "eps 0.15 is not a budget"),
])
def test_bad_threshold_exits_2_before_training(tmp_path, monkeypatch, capsys, flag, needle):
    _no_training(monkeypatch)
    assert run(["audit", str(_spec(tmp_path)), "--out", str(tmp_path / "r"),
                "--fail-under", flag]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r" / "report.json").exists()


def test_spec_threshold_not_in_plan_exits_2_before_training(tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    spec = _spec(tmp_path, 'fail_under: {"robust_accuracy@0.3": 0.5}')
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 2
    assert "eps 0.3 is not a budget" in capsys.readouterr().err


def test_minimum_norm_attack_answers_eps_threshold_report_then_exit(tmp_path, capsys):
    spec, out, junit = _spec(tmp_path), tmp_path / "r", tmp_path / "junit.xml"
    # impossible threshold: exit 1, but the report is written and the gate is in it
    rc = run(["audit", str(spec), "--out", str(out), "--fail-under", "robust_accuracy@0.1=1.0",
              "--fail-under", "attack_success_rate@0.2=0.0", "--junit", str(junit)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "robust_accuracy@0.1" in err and "Traceback" not in err
    doc = json.loads((out / "report.json").read_text())
    gate = [f for f in doc["findings"] if f["threat"] == "gate"]
    assert len(gate) == 2 and not any(f["passed"] for f in gate)
    worst = {s["id"]: s for s in doc["scenarios"] if s["kind"] == "worst_case"}
    assert "deepfool/Linf" in worst["worst-case/Linf/eps=0.1"]["params"]["attacks"]
    # JUnit: one test case per threshold and per finding, failures for the missed thresholds
    root = ET.parse(junit).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == len(doc["findings"])
    thr = [c for c in cases if c.get("classname") == "advkit.thresholds"]
    assert {c.get("name") for c in thr} == {"robust_accuracy@0.1", "attack_success_rate@0.2"}
    assert all(c.find("failure") is not None for c in thr)
    assert int(root.get("failures")) >= 2
    # a reachable threshold with deepfool in the spec passes (resumed from the store): exit 0
    assert run(["audit", str(spec), "--out", str(out), "--fail-under",
                "robust_accuracy@0.1=0.0", "--junit", str(junit)]) == 0
    root = ET.parse(junit).getroot()
    thr = [c for c in root.findall(".//testcase") if c.get("classname") == "advkit.thresholds"]
    assert len(thr) == 1 and thr[0].find("failure") is None
