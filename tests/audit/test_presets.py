"""Presets are spec files shipped in the package, run by the generic runner (issue 12 item 4):
each parses and plans; the backdoor preset's quick version runs end to end through the CLI; the
evasion-defense preset's quick version meets its bars (slow)."""

from __future__ import annotations

import json

import pytest

from advkit.audit import presets
from advkit.audit.runner import active_families
from advkit.audit.spec import load_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError

ALL = [(n, q) for n in presets.names() for q in (False, True)
       if (not q or (presets.FOLDER / f"{n}.quick.yaml").is_file())
       and presets.suite(n, quick=q) is None]


def _plan(name: str, quick: bool) -> dict:
    spec, _ = load_spec(presets.preset_path(name, quick=quick))
    return {sc.id: sc for f in active_families(spec) for sc in f.plan(spec)}


def test_the_privacy_preset_is_a_suite_of_digits_and_adult():
    """An audit has one dataset: --preset privacy runs two (issue 13 item 7)."""
    assert presets.suite("privacy") == ["privacy-digits", "privacy-adult"]
    assert presets.suite("privacy", quick=True) is None  # the quick one is the digits audit
    digits, adult = _plan("privacy-digits", False), _plan("privacy-adult", False)
    assert "privacy/inversion" in digits and "privacy_defenses/dp-sgd/model" in digits
    assert {"privacy/attribute/sex", "privacy/attribute/race",
            "privacy_defenses/dp-sgd/model"} <= set(adult)


@pytest.mark.parametrize("body,needle", [
    ("suite: [privacy-digits, nope]", "suite member 'nope' is not a plain preset"),
    ("suite: []", "a non-empty list"),
    ("suite: [privacy-digits]\nseed: 1", "only 'title' and 'suite'"),
])
def test_a_malformed_suite_is_refused(tmp_path, monkeypatch, body, needle):
    import shutil

    for p in presets.FOLDER.glob("privacy-*.yaml"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "bad.yaml").write_text(body)
    monkeypatch.setattr(presets, "FOLDER", tmp_path)
    with pytest.raises(AuditSpecError, match=needle):
        presets.suite("bad")


def test_suite_refuses_flags_that_cannot_apply_to_every_member(tmp_path, capsys):
    assert run(["audit", "--preset", "privacy", "--model", str(tmp_path / "m.onnx"),
                "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--model cannot apply to the suite preset 'privacy'" in err and "Traceback" not in err


def test_preset_list_names_each_with_one_line(capsys):
    assert run(["audit", "--preset", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("full", "backdoor", "evasion-defense", "privacy"):
        assert any(line.startswith(name) for line in out.splitlines()), out
    assert "every threat family on digits" in out


def test_full_preset_is_a_spec_with_every_family():
    spec, _ = load_spec(presets.preset_path("full"))
    names = [f.name for f in active_families(spec)]
    # every registered family but supply chain, which needs a model file (full trains a zoo one)
    from advkit.audit.families.base import families

    every = sorted(f.name for f in families() if f.name != "supply_chain")
    assert sorted(names) == every
    assert every == ["backdoor", "defenses", "evasion", "extraction", "poisoning", "privacy",
                     "privacy_defenses", "transfer", "watermark"]


@pytest.mark.parametrize("argv,needle", [
    (["--preset", "nope"], "unknown preset 'nope'"),
    (["--preset", "full", "--quick"], "has no quick version"),
    (["--quick"], "--quick applies to presets only"),
])
def test_bad_preset_requests_exit_2(tmp_path, capsys, argv, needle):
    assert run(["audit", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


@pytest.mark.parametrize("name,quick", ALL, ids=[f"{n}{'-quick' if q else ''}" for n, q in ALL])
def test_every_preset_parses_and_plans(name, quick):
    assert _plan(name, quick)


@pytest.mark.parametrize("quick", [False, True])
def test_backdoor_preset_plans_the_lab(quick):
    ids = set(_plan("backdoor", quick))
    base = "poisoning/badnets/rate=0.1/mitigation="
    assert {"poisoning/clean/train", "poisoning/badnets/rate=0.1/train",
            "poisoning/clean/mitigation=neural_cleanse"} <= ids
    assert {base + m for m in ("neural_cleanse", "neural_cleanse-prune", "fine_pruning",
                               "activation_clustering", "spectral_signatures", "strip",
                               "label_consistency")} <= ids


@pytest.mark.parametrize("quick", [False, True])
def test_evasion_defense_preset_plans_the_lab(quick):
    plan = _plan("evasion-defense", quick)
    for t in ("jpeg", "bit-depth", "gaussian-noise"):  # BPDA / EOT: naive and adaptive both run
        assert f"defenses/{t}/pgd/Linf/eps=0.3/naive" in plan
    assert "defenses/median-smoothing/pgd/Linf/eps=0.3" in plan
    assert plan["defenses/randomized-smoothing/certify"].deps == (
        "defenses/gaussian-augmentation/train",)
    assert "defenses/pgd-at/train" in plan


def test_backdoor_quick_preset_end_to_end(tmp_path, monkeypatch, capsys):
    """The quick backdoor audit through the CLI: every mitigation measured with intervals,
    Neural Cleanse on both models, the report rendered; a second run reads every stage back."""
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")
    out = tmp_path / "out"
    assert run(["audit", "--preset", "backdoor", "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in doc["scenarios"]}
    bd = sc["poisoning/badnets/rate=0.1/measure"]["metrics"]
    assert bd["attack_success"]["value"] > 0.9 and bd["clean_accuracy"]["value"] > 0.85
    for m in ("neural_cleanse", "neural_cleanse-prune", "fine_pruning", "activation_clustering",
              "spectral_signatures", "strip"):
        acc = sc[f"poisoning/badnets/rate=0.1/mitigation={m}"]["metrics"]["clean_accuracy"]
        assert acc["n"] == 359 and acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert sc["poisoning/badnets/rate=0.1/mitigation=strip"]["metrics"]["false_acceptance"]["n"] > 0
    lc = sc["poisoning/badnets/rate=0.1/mitigation=label_consistency"]["metrics"]
    assert lc["precision"]["value"] >= 0.9 and lc["recall"]["value"] >= 0.9
    assert lc["attack_success"]["value"] <= 0.05  # retrained without what it flagged
    assert "false_alarm" in sc["poisoning/clean/mitigation=neural_cleanse"]["metrics"]
    titles = {s["title"] for s in doc["sections"]}
    assert {"Poisoning: Neural Cleanse on the clean model",
            "Poisoning: Neural Cleanse on badnets model at rate 0.1"} <= titles
    html = (out / "report.html").read_text()
    # 10 reversed triggers and the attack's true one (one grid image; captions drawn in it)
    assert 'alt="Poisoning: reversed triggers of badnets model at rate 0.1: 11 images"' in html
    capsys.readouterr()
    assert run(["audit", "--preset", "backdoor", "--quick", "--out", str(out)]) == 0
    again = json.loads((out / "report.json").read_text())
    assert again["manifest"]["scenarios_run"] == 0
    assert [s["metrics"] for s in again["scenarios"]] == [s["metrics"] for s in doc["scenarios"]]


@pytest.mark.parametrize("quick", [False, True])
def test_privacy_preset_plans_membership_and_extraction(quick):
    plan = _plan("privacy" if quick else "privacy-digits", quick)
    n = 4 if quick else 16
    assert plan["privacy/membership/lira"].deps == (f"privacy/references/n={n}",)
    assert plan["privacy/membership/rmia"].deps == (f"privacy/references/n={n}",)
    assert {"privacy/membership/loss", "privacy/membership/entropy"} <= set(plan)
    assert any(i.startswith("extraction/copycat/queries=") for i in plan)
    if quick:  # the quick preset re-runs them against DP-SGD and labels-only answers
        assert {"privacy_defenses/dp-sgd/model", "privacy_defenses/labels-only/membership/loss",
                "privacy_defenses/dp-sgd/extraction/copycat/queries=300"} <= set(plan)


@pytest.mark.slow
def test_privacy_quick_preset_end_to_end(tmp_path, monkeypatch):
    """The quick privacy audit through the CLI: the overfit MLP leaks membership (LiRA and RMIA
    above LOSS in AUC), Copycat's fidelity rises from 30 to 300 queries."""
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")
    out = tmp_path / "out"
    assert run(["audit", "--preset", "privacy", "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    loss = sc["privacy/membership/loss"]["auc"]
    assert 0.5 < loss < sc["privacy/membership/lira"]["auc"] < sc["privacy/membership/rmia"]["auc"]
    fid = [sc[f"extraction/copycat/queries={q}"]["fidelity_test"]["value"] for q in (30, 300)]
    assert fid[1] > fid[0] + 0.1
    assert {v["threat"]: v["status"] for v in doc["verdicts"]} == {"privacy": "vulnerable",
                                                                  "extraction": "vulnerable"}


@pytest.mark.slow
def test_evasion_defense_quick_preset_meets_the_transform_bars(tmp_path, monkeypatch):
    """The adaptive attack (BPDA/EOT) is at least as strong as the naive one on every transform
    and breaks all but bit-depth reduction; the certified-accuracy curve never rises."""
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")
    out = tmp_path / "out"
    assert run(["audit", "--preset", "evasion-defense", "--quick", "--out", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s["metrics"] for s in doc["scenarios"]}
    for name in ("jpeg", "median-smoothing", "bit-depth", "gaussian-noise"):
        adaptive = sc[f"defenses/{name}/pgd/Linf/eps=0.3"]["robust_accuracy"]
        naive = sc.get(f"defenses/{name}/pgd/Linf/eps=0.3/naive", {}).get("robust_accuracy",
                                                                           adaptive)
        assert adaptive["k"] <= naive["k"] + 1, name  # one point of slack for random starts
        if name != "bit-depth":
            assert adaptive["value"] <= 0.10, name
    checks = {f["check"]: f for f in doc["findings"]}
    assert checks["certified_curve_rises"]["passed"]


def test_a_suite_runs_each_member_into_its_folder_and_writes_an_index(tmp_path, monkeypatch,
                                                                        capsys):
    tiny = ("title: {t}\nseed: 0\ndataset: {{name: {d}, n_train: 200}}\n"
            "model: {{zoo: mlp, epochs: 3}}\n"
            "privacy: {{members: 50, membership: [{{name: loss}}]}}\n")
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "one.yaml").write_text(tiny.format(t="one <digits>", d="digits"))
    (folder / "two.yaml").write_text(tiny.format(t="two", d="breast_cancer"))
    (folder / "both.yaml").write_text("# both\nsuite: [one, two]\n")
    monkeypatch.setattr(presets, "FOLDER", folder)
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ADVKIT_HISTORY", str(tmp_path / "history.sqlite"))
    out = tmp_path / "out"
    assert run(["audit", "--preset", "both", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "audit 1/2: one" in printed and "audit 2/2: two" in printed
    for member, dataset in (("one", "digits"), ("two", "breast_cancer")):
        doc = json.loads((out / member / "report.json").read_text())
        assert doc["dataset"]["name"] == dataset
        assert "privacy/membership/loss" in {s["id"] for s in doc["scenarios"]}
    index = (out / "index.html").read_text()
    assert 'href="one/report.html"' in index and 'href="two/report.html"' in index
    assert "one &lt;digits&gt;" in index and "<digits>" not in index  # titles are escaped
