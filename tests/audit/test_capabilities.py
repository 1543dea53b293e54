"""Capability-aware plans (issue 11, item 6): the plan is checked against what the target answers
before any scenario runs; attacks advkit chose adapt (and the report says so), attacks the user
named run as named or are refused in one error that lists what would work; a labels-only target
is never told to try Square (it is told to try the decision-based attacks)."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from advkit import registry
from advkit.attacks.support import alternatives, requires, runnable_attacks
from advkit.audit.capabilities import check_plan
from advkit.audit.plan import make_plan
from advkit.audit.spec import default_spec, parse_spec
from advkit.cli.main import run
from advkit.data import load
from advkit.errors import AuditSpecError, IncompatibleTargetError
from advkit.evaluation.ensemble import run_ensemble
from advkit.targets.base import CAPABILITIES, Capabilities

SCORES = Capabilities(probabilities=True, labels=True)  # a random forest: no gradients, no logits
LABELS = Capabilities(labels=True)
GRADIENT_ATTACKS = [e.name for e in registry.entries("evasion") if "gradients" in e.cls.requires]


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


@pytest.fixture(scope="module")
def data():
    return load("breast_cancer")


def _fit(data, kind):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.svm import SVC

    est = (RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0) if kind == "rf"
           else SVC())  # SVC without probability=True answers labels only
    return est.fit(data.x_train.numpy(), data.y_train.numpy())


@pytest.fixture(scope="module")
def models(data, tmp_path_factory):
    """A random forest (labels and probabilities) and an SVC (labels only), saved with skops."""
    import skops.io as sio

    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for kind in ("rf", "svc"):
        paths[kind] = folder / f"{kind}.skops"
        sio.dump(_fit(data, kind), paths[kind])
    return paths


def _target(data, kind):
    from advkit.models.io import target_for

    return target_for(_fit(data, kind), data)


def _spec(model_path, body: str, tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text(f"dataset: breast_cancer\nmodel: {{path: {model_path}, trust_pickle: true}}\n"
                 f"evaluation: {{n_samples: 30}}\n{body}")
    return p


def _audit(spec, out):
    from advkit.audit.runner import run_audit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trust_pickle warning
        return run_audit(spec, out_dir=out, spec_sha256="test", progress=False)


def _fail_if_run(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a scenario ran before the capability check")

    monkeypatch.setattr("advkit.audit.families.evasion.run_scenario", refuse)


# ------------------------------------------------------------------------------- the check itself


def test_targets_have_the_capabilities_the_tests_assume(data):
    assert _target(data, "rf").capabilities == SCORES
    assert _target(data, "svc").capabilities == LABELS


def test_default_plan_adapts_to_a_target_without_gradients():
    spec = default_spec()
    plan = make_plan(spec)
    out = check_plan(plan, SCORES, adapt=True, target="RandomForestClassifier")
    attacks = {sc.attack for sc in out.plan if sc.kind == "attack"}
    assert attacks == {"square"}
    # every budget of the replaced attacks is still measured, by Square
    assert ({sc.eps for sc in out.plan if sc.kind == "attack"}
            == {sc.eps for sc in plan if sc.kind == "attack"})
    ens = [sc for sc in out.plan if sc.kind == "ensemble"]
    assert len(ens) == len(spec.ensemble.eps)
    for sc in ens:  # APGD-CE and APGD-T replaced by Square; the extra PGD stage dropped
        assert sc.params["attacks"] == ["square"] and sc.params["version"] == "custom"
    assert all(requires(sc.attack) <= SCORES.names() for sc in out.plan if sc.kind == "attack")
    actions = {(c.attack, c.action) for c in out.changes}
    assert {("fgsm", "substituted"), ("pgd", "substituted"), ("pgd", "stage dropped"),
            ("apgd, apgd-t", "stages replaced")} == actions
    text = out.summary()
    assert "fgsm needs gradients: square ran instead" in text
    assert "standard stages (APGD-CE, APGD-T) need gradients: square ran instead" in text


def test_a_target_with_gradients_keeps_the_plan_unchanged():
    plan = make_plan(default_spec())
    full = Capabilities(gradients=True, logits=True, probabilities=True, labels=True)
    out = check_plan(plan, full, adapt=True)
    assert out.plan == plan and not out.changes
    assert out.section() is None and out.finding() is None


def test_explicit_request_is_one_error_listing_every_scenario_and_what_works():
    spec = parse_spec({
        "dataset": "breast_cancer", "model": {"zoo": "mlp"},
        "attacks": [{"name": "pgd", "eps": [0, 0.1]}, {"name": "deepfool", "norm": "l2"},
                    {"name": "square", "eps": [0.1]}],
        "ensemble": {"eps": [0.1], "attacks": ["fgsm"]}})
    with pytest.raises(AuditSpecError) as err:
        check_plan(make_plan(spec), SCORES, target="RandomForestClassifier")
    msg = str(err.value)
    for sid in ("pgd/Linf/eps=0", "pgd/Linf/eps=0.1", "deepfool/L2", "ensemble/Linf/eps=0.1"):
        assert sid in msg
    assert "stage fgsm needs gradients" in msg
    assert "square/Linf" not in msg  # square runs: not listed as a problem
    assert "attacks that run on this target: " in msg
    for works in ("square (needs probabilities)", "hopskipjump (needs labels)"):
        assert works in msg
    assert "adapt: true" in msg


def test_adapted_plan_drops_what_nothing_registered_can_replace():
    spec = parse_spec({
        "dataset": "breast_cancer", "model": {"zoo": "mlp"},
        "attacks": [{"name": "pgd", "norm": "l1", "eps": [1.0]}, {"name": "deepfool"}],
        "ensemble": {"norm": "l1", "eps": [1.0]}})
    out = check_plan(make_plan(spec), SCORES, adapt=True)
    assert out.plan == [] and out.nothing_runs  # square takes no L1 budget, nor minimum norms
    assert {c.action for c in out.changes} == {"dropped"}
    assert "takes L1 budgets" in out.summary() and "minimum-norm" in out.summary()


def test_a_named_replacement_keeps_its_own_parameters():
    spec = parse_spec({
        "dataset": "breast_cancer", "model": {"zoo": "mlp"}, "adapt": True,
        "attacks": [{"name": "pgd", "eps": [0.1]},
                    {"name": "square", "eps": [0.1], "params": {"n_queries": 7}}]})
    out = check_plan(make_plan(spec), SCORES, adapt=True)
    assert [(sc.id, sc.params) for sc in out.plan] == [("square/Linf/eps=0.1", {"n_queries": 7})]
    assert [c.replacement for c in out.changes] == ["square/Linf/eps=0.1"]


def test_labels_only_explicit_request_names_no_square():
    with pytest.raises(AuditSpecError) as err:
        check_plan(make_plan(default_spec()), LABELS, target="SVC")
    msg = str(err.value)
    assert "square" not in msg.lower()
    assert "offers only labels" in msg
    assert "boundary (needs labels), hopskipjump (needs labels)" in msg  # decision-based ones


def test_labels_only_adapted_plan_runs_hopskipjump_once_per_norm():
    out = check_plan(make_plan(default_spec()), LABELS, adapt=True, target="SVC")
    # no decision-based attack takes an eps budget: one minimum-norm HopSkipJump run at Linf
    # replaces every Linf scenario (its per-point norms answer every eps)
    assert [(sc.id, sc.attack, sc.eps) for sc in out.plan] == [("hopskipjump/Linf",
                                                                  "hopskipjump", None)]
    assert out.plan[0].attack_params() == {"norm": "linf"}
    assert out.working == ["boundary", "hopskipjump", "sign-opt"]
    text = out.summary()
    assert "pgd needs gradients: hopskipjump ran instead once at the same norm" in text
    assert "square" not in text.lower()
    assert out.finding().severity == "warning" and not out.finding().passed
    l2 = parse_spec({"dataset": "breast_cancer", "model": {"zoo": "mlp"},
                     "attacks": [{"name": "deepfool", "norm": "l2"}]})
    assert [sc.id for sc in check_plan(make_plan(l2), LABELS, adapt=True).plan] == [
        "hopskipjump/L2"]


def test_scores_only_adapted_plan_does_not_add_decision_attacks():
    out = check_plan(make_plan(default_spec()), SCORES, adapt=True)
    assert {sc.attack for sc in out.plan if sc.kind == "attack"} == {"square"}


@pytest.mark.parametrize("caps", [frozenset(c) for r in range(len(CAPABILITIES) + 1)
                                  for c in itertools.combinations(CAPABILITIES, r)])
def test_suggestions_name_only_attacks_the_target_can_run(caps):
    text = alternatives(caps, prefer="square")
    named = {n for n in registry.list("evasion") if f"{n} (needs" in text}
    assert named == set(runnable_attacks(caps))
    assert all(requires(n) <= caps for n in named)


# ------------------------------------------------------------------ attacks and the ensemble


@pytest.mark.parametrize("name", GRADIENT_ATTACKS + ["square"])
def test_labels_only_target_is_not_told_to_try_square(data, name):
    target = _target(data, "svc")
    with pytest.raises(IncompatibleTargetError) as err:
        registry.create(name).attack(target, data.x_test[:4], data.y_test[:4])
    assert "square" not in str(err.value).replace(f"the {name} attack", "").lower()
    assert "hopskipjump (needs labels)" in str(err.value)


def test_scores_only_target_is_told_to_try_square(data):
    with pytest.raises(IncompatibleTargetError, match=r"try square \(needs probabilities\)"):
        registry.create("pgd").attack(_target(data, "rf"), data.x_test[:4], data.y_test[:4])


def test_ensemble_uses_square_without_gradients(data):
    target = _target(data, "rf")
    res = run_ensemble(target, data.x_test[:20], data.y_test[:20], eps=0.2,
                       attacks=[{"name": "square", "params": {"n_queries": 20}}],
                       generator=torch.Generator().manual_seed(0))
    assert [s.attack for s in res.stages] == ["square", "square"]


def test_ensemble_refuses_an_unrunnable_stage_before_any_runs(data):
    target = _target(data, "rf")
    with pytest.raises(IncompatibleTargetError, match="the ensemble's pgd stage needs gradients"):
        run_ensemble(target, data.x_test[:20], data.y_test[:20], eps=0.2, attacks=["pgd"])
    assert target.queries == 0  # nothing ran, not even the standard stages


# ------------------------------------------------------------------------- whole audits


def test_default_attacks_on_a_random_forest_run_adapted(models, tmp_path):
    spec = default_spec().model_copy(update={
        "dataset": default_spec().dataset.model_copy(update={"name": "breast_cancer"}),
        "model": default_spec().model.model_copy(update={
            "zoo": None, "path": str(models["rf"]), "trust_pickle": True}),
        "evaluation": default_spec().evaluation.model_copy(update={"n_samples": 30}),
        "adapt": default_spec().adapt.model_copy(update={"params": {"square": {"n_queries": 20}}}),
    })
    report = _audit(spec, tmp_path / "out")
    ran = {s.attack for s in report.scenarios if s.kind == "evasion"}
    assert ran == {"square"}
    stages = {st["attack"] for s in report.scenarios if s.kind == "ensemble"
              for st in s.per_sample["stages"]}
    assert stages == {"square"}
    assert report.sections[0].title == "Attacks adapted to the target"
    assert "fgsm needs gradients: square ran instead" in report.sections[0].text
    finding = next(f for f in report.findings if f.check == "capability_plan")
    assert "pgd needs gradients" in finding.why
    assert [v.status for v in report.verdicts if v.threat == "evasion"] != ["not assessed"]


def test_explicit_pgd_on_a_random_forest_fails_before_anything_runs(models, tmp_path, capsys,
                                                                    monkeypatch):
    _fail_if_run(monkeypatch)
    spec = _spec(models["rf"], "attacks: [{name: pgd, eps: [0.1], params: {steps: 3}}]\n"
                               "ensemble: {eps: [0.1]}\n", tmp_path)
    out = tmp_path / "out"
    code = run(["audit", str(spec), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    text = err[err.index("error:"):]
    assert "AuditSpecError" in text and "pgd needs gradients: pgd/Linf/eps=0.1" in text
    assert "attacks that run on this target: " in text and "square (needs probabilities)" in text
    assert "ensemble/" not in text  # the standard ensemble adapts: Square replaces APGD
    assert not (out / "report.json").exists()


def test_labels_only_audit_explicit_is_exit_2_adapted_runs_hopskipjump(models, tmp_path, capsys,
                                                                       monkeypatch):
    spec = _spec(models["svc"], "attacks: [{name: fgsm, eps: [0.1]}]\n", tmp_path)
    with monkeypatch.context() as m:
        _fail_if_run(m)
        code = run(["audit", str(spec), "--out", str(tmp_path / "a"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    text = err[err.index("error:"):]
    assert "offers only labels" in text and "square" not in text.lower()
    report = _audit(parse_spec({
        "dataset": "breast_cancer", "evaluation": {"n_samples": 30},
        "adapt": {"enabled": True, "params": {"hopskipjump": {"max_queries": 200}}},
        "model": {"path": str(models["svc"]), "trust_pickle": True},
        "attacks": [{"name": "fgsm", "eps": [0.1]}]}), tmp_path / "b")
    ran = [s for s in report.scenarios if s.kind == "evasion"]
    assert [(s.attack, s.params["max_queries"]) for s in ran] == [("hopskipjump", 200)]
    assert report.sections[0].title == "Attacks adapted to the target"
    assert "fgsm needs gradients: hopskipjump ran instead once" in report.sections[0].text
    extra = ran[0].per_sample["extra"]
    assert len(extra["success_by_query"]) == len(extra["median_norm_by_query"]) == 200
    titles = [p.title for sec in report.sections for p in sec.plots]
    assert any(t.startswith("Success against queries") for t in titles)
    assert any(t.startswith("Median perturbation norm against queries") for t in titles)


@pytest.mark.parametrize("params,needle", [
    ({"nope": {}}, "unknown attack 'nope'"),
    ({"square": {"eps": 0.1}}, "eps and norm come from the scenario"),
    ({"square": {"n_queries": 0}}, "n_queries"),
])
def test_adapt_params_are_checked_with_the_spec(params, needle):
    with pytest.raises(AuditSpecError, match=needle):
        parse_spec({"dataset": "breast_cancer", "model": {"zoo": "mlp"},
                    "adapt": {"enabled": True, "params": params},
                    "attacks": [{"name": "fgsm", "eps": [0.1]}]})
