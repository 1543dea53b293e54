"""The defenses family: each budgeted evasion scenario against each defended model (transforms
under adaptive and naive attack, output hardening, randomized-smoothing certification, a training
defense), a before/after section, findings and a verdict from stored records; spec errors (a
training defense on a model file, an unknown defense) exit 2 before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError
from report_keys import run_independent

SPEC = {
    "title": "defenses",
    "seed": 0,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 3},
    "evaluation": {"n_samples": 60},
    "attacks": [{"name": "pgd", "eps": [0, 0.1], "params": {"steps": 5}}],
    "adapt": {"enabled": False, "params": {"square": {"n_queries": 50}}},
    "defenses": [
        {"name": "jpeg", "params": {"quality": 50}},
        "median-smoothing",
        {"name": "output-rounding", "params": {"decimals": 2}},
        {"name": "randomized-smoothing", "params": {"sigma": 0.25, "n0": 10, "n": 100},
         "points": 40},
        {"name": "fast-fgsm", "params": {"eps": 0.1}, "epochs": 2},
    ],
}
KEYS = ("jpeg", "median-smoothing", "output-rounding", "randomized-smoothing", "fast-fgsm")


def stable(obj):
    """The report without what differs between runs (report_keys.RUN_VOLATILE)."""
    return run_independent(obj)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def _write(tmp_path: Path, spec: dict) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def _defenses_part(doc: dict) -> dict:
    return {"scenarios": [s for s in doc["scenarios"] if s["id"].startswith("defenses/")],
            "findings": [f for f in doc["findings"] if f["threat"] == "defenses"],
            "verdicts": [v for v in doc["verdicts"] if v["threat"] == "defenses"],
            "sections": [s for s in doc["sections"] if s["title"].startswith("Defenses")]}


def test_each_defense_runs_the_evasion_scenarios_and_the_report_compares(tmp_path, capsys):
    spec_path, out = _write(tmp_path, SPEC), tmp_path / "out"
    assert run(["audit", str(spec_path), "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in doc["scenarios"]}
    # every finding (evasion validity checks included) carries a threat tag
    untagged = [f["check"] for f in doc["findings"] if not f["threat_tag"]]
    assert not untagged
    # the undefended scenario (evasion family) and the same scenario against each defense
    assert "pgd/Linf/eps=0.1" in sc
    for key in ("jpeg", "median-smoothing", "output-rounding", "fast-fgsm"):
        s = sc[f"defenses/{key}/pgd/Linf/eps=0.1"]
        assert s["kind"] == "defended_evasion" and s["defense"] == key
        m = s["metrics"]
        assert m["eps"] == 0.1 and m["robust_accuracy"]["n"] == 60
        assert m["robust_accuracy"]["value"] <= m["clean_accuracy"]["value"]
        worst = sc[f"defenses/{key}/worst-case/Linf/eps=0.1"]["metrics"]["robust_accuracy"]
        assert worst["k"] == m["robust_accuracy"]["k"]  # one attack: the worst case is it
    assert "defenses/jpeg/cost" in sc and "defenses/fast-fgsm/train" in sc
    # JPEG rounds: its gradient is zero almost everywhere, so the naive attack is blunt and the
    # adaptive one (BPDA) is not; median smoothing has exact gradients: no naive stage
    naive = sc["defenses/jpeg/pgd/Linf/eps=0.1/naive"]["metrics"]["robust_accuracy"]
    adaptive = sc["defenses/jpeg/pgd/Linf/eps=0.1"]["metrics"]["robust_accuracy"]
    assert naive["k"] > adaptive["k"] + 1
    assert "defenses/median-smoothing/pgd/Linf/eps=0.1/naive" not in sc
    # output hardening removes gradients: Square ran through the rounded outputs, and the
    # undefended model's PGD examples transfer (rounding changes no decision)
    hard = sc["defenses/output-rounding/pgd/Linf/eps=0.1"]
    assert hard["attack"].startswith("square + transfer of pgd")
    undefended = sc["pgd/Linf/eps=0.1"]["metrics"]["robust_accuracy"]
    assert hard["metrics"]["robust_accuracy"]["k"] <= undefended["k"]
    cert = sc["defenses/randomized-smoothing/certify"]
    assert cert["kind"] == "certification" and cert["metrics"]["queries"] == 40 * 110
    assert 0 <= cert["metrics"]["certified_accuracy_r0"]["value"] <= 1
    # the section: before/after with cost, naive against adaptive, hardening, certification
    section = next(s for s in doc["sections"] if s["title"] == "Defenses: before and after")
    tables = {t["title"]: t for t in section["tables"]}
    main = tables["Before and after: each defense"]
    assert [r[0] for r in main["rows"]] == ["none (undefended)", *KEYS]
    assert "robust Linf eps=0.1" in main["columns"] and "queries/point" in main["columns"]
    assert main["rows"][0][main["columns"].index("robust Linf eps=0.1")]["k"] == undefended["k"]
    gap = tables["Input transforms: naive against adaptive attacks"]["rows"]
    assert [r[0] for r in gap] == ["jpeg"] and gap[0][-1].startswith("BPDA")
    assert "Output hardening: attacks through the hardened outputs and transfer" in tables
    assert "Randomized smoothing: certified accuracy (abstain = wrong)" in tables
    assert "Training defenses: the recipe retrained" in tables
    findings = {(f["check"], f["scenario"]): f for f in doc["findings"]
                if f["threat"] == "defenses"}
    jpeg = findings[("defense_holds_only_against_naive_attack",
                     "defenses/jpeg/worst-case/Linf/eps=0.1")]
    assert jpeg["severity"] == "critical" and not jpeg["passed"]
    assert any(c == "output_hardening_hides_scores_only" for c, _ in findings)
    assert sum(c == "defense_cost" for c, _ in findings) == len(KEYS)
    verdict = next(v for v in doc["verdicts"] if v["threat"] == "defenses")
    assert [f["defense"] for f in verdict["figures"]] == list(KEYS)
    assert verdict["status"] in ("robust", "vulnerable", "inconclusive")
    assert all(f["text"].startswith(f["defense"]) for f in verdict["figures"])
    summary = capsys.readouterr().out
    assert "**defenses: " in summary and "median-smoothing (transform)" in summary
    # resumed: every stage is read back from the store and the report is the same
    assert run(["audit", str(spec_path), "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert all(s["from_store"] for s in again["scenarios"] if s["id"].startswith("defenses/")
               and s["kind"] != "defense_worst_case")
    assert stable(_defenses_part(again)) == stable(_defenses_part(doc))


def test_a_training_defense_on_a_model_file_exits_2_before_anything_runs(tmp_path, monkeypatch,
                                                                          capsys):
    from advkit.audit import defenses_stages
    from advkit.models.io import save_model
    from advkit.models.zoo import build

    net = build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=torch.Generator(),
                hidden=(8,))
    save_model(net, tmp_path / "model")
    import advkit.models.cache as cache

    def boom(*a, **k):
        raise AssertionError("training or a stage was reached")

    monkeypatch.setattr(cache, "train_recipe", boom)
    monkeypatch.setattr(defenses_stages, "run_stage", boom)
    spec = {**SPEC, "model": {"path": str(tmp_path / "model")},
            "defenses": ["jpeg", {"name": "pgd-at", "params": {"eps": 0.1, "steps": 3}}]}
    code = run(["audit", str(_write(tmp_path, spec)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "AuditSpecError" in err and "pgd-at" in err and "zoo" in err


def test_an_unknown_defense_exits_2_naming_the_known_ones(tmp_path, capsys):
    spec = {**SPEC, "defenses": [{"name": "prayer"}]}
    code = run(["audit", str(_write(tmp_path, spec)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "defenses[0].name" in err and "prayer" in err and "jpeg" in err
    assert not (tmp_path / "out" / "report.json").exists()


@pytest.mark.parametrize("section, where", [
    ({"name": "jpeg"}, "expected a list"),
    ([{"name": "jpeg", "typo": 1}], "[0].typo"),
    ([{"name": "jpeg", "params": {"quality": 0}}], "quality"),
    ([{"name": "output-rounding", "eot_samples": 3}], "[0].eot_samples"),
    ([{"name": "trades"}], "TRADES"),
    ([{"name": "neural_cleanse"}], "backdoor"),
    (["jpeg", {"name": "jpeg", "params": {"quality": 50}}], "label"),
    ([{"name": "pgd-at", "params": {"bounds": [0, 1]}}], "bounds"),
    ([{"name": "randomized-smoothing", "base": "pgd-at"}], "[0].base"),
    ([{"name": "jpeg", "base": "x"}], "[0].base"),
    ([{"name": "gaussian-augmentation", "warmup_batches": 10}], "warmup_batches"),
    ([{"name": "gaussian-augmentation", "params": {"sigma": 0}}], "sigma"),
])
def test_section_errors_name_the_field(section, where):
    with pytest.raises(AuditSpecError, match="defenses") as exc:
        parse_spec({**SPEC, "defenses": section})
    assert where in str(exc.value)


def test_attacked_defenses_need_a_budgeted_attack():
    from advkit.audit.families.base import get

    with pytest.raises(AuditSpecError, match="no budgeted attack"):
        parse_spec({**SPEC, "attacks": [{"name": "pgd", "eps": [0]}], "defenses": ["jpeg"]})
    only_cert = parse_spec({**SPEC, "attacks": [], "defenses": [
        {"name": "randomized-smoothing", "params": {"n": 10}}]})
    assert [s.id for s in get("defenses").plan(only_cert)] == [
        "defenses/randomized-smoothing/certify"]


def test_smoothing_certifies_the_model_a_training_entry_trained(tmp_path, monkeypatch):
    """``base: KEY``: CERTIFY runs on the model the gaussian-augmentation entry trained (Cohen et
    al.'s base classifier), after its train stage, and the report says which model it was."""
    from advkit.audit import defenses_stages, runner
    from advkit.audit.families.base import get
    from advkit.defenses.certify.smoothing import RandomizedSmoothing

    spec = parse_spec({**SPEC, "defenses": [
        {"name": "gaussian-augmentation", "params": {"sigma": 0.25}, "epochs": 2},
        {"name": "randomized-smoothing", "label": "rs-plain",
         "params": {"sigma": 0.25, "n0": 10, "n": 100}, "points": 30},
        {"name": "randomized-smoothing", "label": "rs-noise",
         "params": {"sigma": 0.25, "n0": 10, "n": 100}, "points": 30,
         "base": "gaussian-augmentation"}]})
    stages = {s.id: s for s in get("defenses").plan(spec)}
    assert stages["defenses/rs-noise/certify"].deps == ("defenses/gaussian-augmentation/train",)
    assert stages["defenses/rs-plain/certify"].deps == ()
    certified, trained = [], {}
    cert, held = RandomizedSmoothing.certify, defenses_stages._trained_target

    def spy_certify(self, target, x, **kw):
        certified.append(target)
        return cert(self, target, x, **kw)

    def spy_trained(d, ctx):
        out = held(d, ctx)
        trained[d.key] = out[0]
        return out

    monkeypatch.setattr(RandomizedSmoothing, "certify", spy_certify)
    monkeypatch.setattr(defenses_stages, "_trained_target", spy_trained)
    rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
    plain, noise = certified
    assert noise is trained["gaussian-augmentation"] and plain is not noise
    doc = rep.to_dict()
    table = next(t for s in doc["sections"] for t in s["tables"]
                 if t["title"].startswith("Randomized smoothing"))
    bases = {row[0]: row[1] for row in table["rows"]}
    assert bases == {"rs-plain": "the audited model", "rs-noise": "model of gaussian-augmentation"}
