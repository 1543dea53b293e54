"""Audit specs: valid YAML becomes a plan; every malformed spec is one AuditSpecError naming the field."""

import pytest

from advkit.audit.plan import make_plan
from advkit.audit.spec import default_spec, load_spec, parse_spec
from advkit.errors import AuditSpecError

GOOD = {
    "dataset": "digits",
    "model": {"zoo": "cnn-small", "epochs": 2},
    "attacks": [
        {"name": "fgsm", "eps": [0.1, 0.0, 0.1]},
        {"name": "pgd", "norm": "l2", "eps": [0.5]},
    ],
}


def test_plan_from_spec():
    plan = make_plan(parse_spec(GOOD))
    assert [s.id for s in plan] == ["fgsm/Linf/eps=0", "fgsm/Linf/eps=0.1", "pgd/L2/eps=0.5"]
    assert plan[2].attack_params() == {"eps": 0.5, "norm": "l2"}


def test_default_spec_is_digits_fgsm_pgd():
    s = default_spec()
    assert s.dataset.name == "digits" and s.model.zoo == "cnn-small"
    assert {a.name for a in s.attacks} == {"fgsm", "pgd"}
    assert s.sha256() == default_spec().sha256()


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({**GOOD, "attacks": [{"name": "nope"}]}, "unknown attack 'nope'"),
        ({**GOOD, "attacks": []}, "attacks"),
        ({**GOOD, "model": {"zoo": "cnn-small", "path": "x"}}, "exactly one of 'zoo'"),
        ({**GOOD, "modle": {}}, "modle: unknown field"),
        ({**GOOD, "attacks": [{"name": "pgd", "eps": [-0.1]}]}, "eps values must be >= 0"),
        ({**GOOD, "model": {"zoo": "cnn-small", "epochs": 0}}, "model.epochs"),
        ([1, 2], "must be a YAML mapping"),
    ],
)
def test_malformed_specs(bad, needle):
    with pytest.raises(AuditSpecError) as ei:
        parse_spec(bad)
    assert needle in str(ei.value)


def test_yaml_errors_and_missing_file(tmp_path):
    with pytest.raises(AuditSpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("dataset: [unclosed\n")
    with pytest.raises(AuditSpecError, match="not valid YAML"):
        load_spec(p)
    p.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(AuditSpecError, match="not valid YAML"):  # safe_load refuses python tags
        load_spec(p)


def test_relative_paths_resolve_next_to_the_spec(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("dataset: {path: data.npz}\nmodel: {path: m}\nattacks: [{name: fgsm}]\n")
    spec, sha = load_spec(p)
    assert spec.dataset.path == str(tmp_path / "data.npz") and spec.model.path == str(
        tmp_path / "m"
    )
    assert len(sha) == 64


def test_two_entries_of_one_attack_with_different_parameters_both_run():

    spec = parse_spec({"dataset": "digits", "model": {"zoo": "mlp"}, "attacks": [
        {"name": "pgd", "eps": [0.1], "params": {"steps": 10}},
        {"name": "pgd", "eps": [0.1, 0.2], "params": {"steps": 50}},
        {"name": "pgd", "eps": [0.3], "params": {"steps": 10}}]})
    ids = [sc.id for sc in make_plan(spec)]
    assert ids == ["pgd/Linf/eps=0.1", "pgd#2/Linf/eps=0.1", "pgd#2/Linf/eps=0.2",
                   "pgd/Linf/eps=0.3"]
    steps = {sc.id: sc.params["steps"] for sc in make_plan(spec)}
    assert steps["pgd#2/Linf/eps=0.1"] == 50 and steps["pgd/Linf/eps=0.1"] == 10
