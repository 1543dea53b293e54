"""The poisoning family: poison, train the recipe through the shared cached trainer, measure with
intervals, mitigate; a model file is refused before any training; a run killed (SIGKILL) during a
training stage resumes at that stage and ends with the uninterrupted run's report."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from advkit.audit import runner
from advkit.audit.spec import parse_spec
from advkit.cli.main import run
from advkit.errors import AuditSpecError, InvalidParameterError
from report_keys import run_independent

SPEC = {
    "title": "poisoning",
    "seed": 0,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 1, "lr": 0.01, "kwargs": {"hidden": [32]}},
    "poisoning": {
        "attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 2, "target": 0}},
                    {"name": "label_flip", "rates": [0.2]}],
        "mitigations": ["spectral_signatures"],
        "training": {"epochs": 10},
    },
}


def stable(obj):
    """The report without what differs between runs (report_keys.RUN_VOLATILE)."""
    return run_independent(obj)


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "true")


def _write(tmp_path, spec: dict, name="spec.yaml") -> Path:
    import yaml

    p = tmp_path / name
    p.write_text(yaml.safe_dump(spec))
    return p


def test_poisoning_audit_measures_each_attack_and_mitigation(tmp_path):
    spec = parse_spec(SPEC)
    rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
    doc = rep.to_dict()
    sc = {s["id"]: s for s in doc["scenarios"]}
    assert [s for s in sc if s.startswith("poisoning/")] == [
        "poisoning/clean/train", "poisoning/clean/measure",
        "poisoning/badnets/rate=0.1/train", "poisoning/badnets/rate=0.1/measure",
        "poisoning/badnets/rate=0.1/mitigation=spectral_signatures",
        "poisoning/label_flip/rate=0.2/train", "poisoning/label_flip/rate=0.2/measure",
        "poisoning/label_flip/rate=0.2/mitigation=spectral_signatures"]
    clean = sc["poisoning/clean/measure"]["metrics"]["clean_accuracy"]
    bad = sc["poisoning/badnets/rate=0.1/measure"]["metrics"]
    flip = sc["poisoning/label_flip/rate=0.2/measure"]["metrics"]
    for m in (clean, bad["clean_accuracy"], bad["attack_success"], flip["clean_accuracy"]):
        assert m["n"] > 0 and m["ci_low"] <= m["value"] <= m["ci_high"]
    assert clean["value"] > 0.85 and bad["clean_accuracy"]["value"] > 0.85
    # backdoor success counts triggered test points whose true class is not the target
    n_target = bad["attack_success"]["n"]
    assert n_target == int((_test_labels(rep) != 0).sum())
    assert bad["attack_success"]["value"] > 0.5  # BadNets at 10 % implants the backdoor
    assert flip["attack_success"] is None  # random flips have no success metric
    train = sc["poisoning/badnets/rate=0.1/train"]["metrics"]
    assert train["n_poisoned"] == round(0.1 * train["n_train"])
    mit = sc["poisoning/badnets/rate=0.1/mitigation=spectral_signatures"]
    assert mit["defense"] == "spectral_signatures"
    assert mit["metrics"]["recall"]["n"] == train["n_poisoned"]
    assert 0 <= mit["metrics"]["attack_success"]["value"] <= 1
    verdict = next(v for v in doc["verdicts"] if v["threat"] == "poisoning")
    assert verdict["status"] == "vulnerable"
    checks = {f["check"] for f in doc["findings"]}
    assert {"poisoning.backdoor_success", "poisoning.clean_accuracy_drop",
            "poisoning.mitigation.spectral_signatures"} <= checks
    titles = [s["title"] for s in doc["sections"]]
    assert "Poisoning: attacks" in titles and "Poisoning: mitigations" in titles
    # every finding carries a threat tag: its own (the attack's, the defense's) or its family's
    assert all(f["threat_tag"] and f["threat_tag"]["atlas_id"] for f in doc["findings"])


def _test_labels(rep):
    from advkit.data import load

    return load("digits").y_test[:rep.manifest["n_evaluated"]]


def test_a_model_file_is_refused_before_any_training(tmp_path, monkeypatch, capsys):
    from advkit.models.io import save_model
    from advkit.models.zoo import build

    net = build("mlp", input_shape=(1, 8, 8), n_classes=10, generator=torch.Generator(),
                hidden=(8,))
    save_model(net, tmp_path / "model")
    import advkit.models.cache as cache

    def boom(*a, **k):
        raise AssertionError("training was reached")

    monkeypatch.setattr(cache, "train_recipe", boom)
    spec = {**SPEC, "model": {"path": str(tmp_path / "model")}}
    code = run(["audit", str(_write(tmp_path, spec)), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "AuditSpecError" in err and "recipe" in err and "zoo" in err


@pytest.mark.parametrize("section, where", [
    ({"attacks": [{"name": "nope", "rates": [0.1]}]}, "attacks[0].name"),
    ({"attacks": [{"name": "badnets", "rates": [1.5]}]}, "rates"),
    ({"attacks": [{"name": "badnets", "rates": [0.1], "params": {"rate": 0.1}}]}, "rates"),
    ({"attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 0}}]}, "size"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}, {"name": "badnets", "rates": [0.2]}]},
     "label"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}], "mitigations": ["prayer"]},
     "mitigations[0]"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}],
      "mitigations": [{"name": "fine_pruning", "params": {"max_drop": 3}}]}, "max_drop"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}], "training": {"optimizer": "rmsprop"}},
     "optimizer"),
    ({"attacks": []}, "attacks"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}],
      "mitigations": [{"name": "fine_pruning", "repair": "prune"}]}, "repair"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}],
      "mitigations": [{"name": "neural_cleanse", "repair": "pray"}]}, "repair"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}],
      "mitigations": ["neural_cleanse", {"name": "neural_cleanse", "repair": "prune"}]},
     "label"),
    ({"attacks": [{"name": "badnets", "rates": [0.1]}], "typo": 1}, "typo"),
])
def test_section_errors_name_the_field(section, where):
    with pytest.raises(AuditSpecError, match="poisoning") as exc:
        parse_spec({**SPEC, "poisoning": section})
    assert where in str(exc.value)


def test_an_attack_the_data_cannot_take_is_refused_before_any_stage(tmp_path, monkeypatch):
    spec = parse_spec({**SPEC, "poisoning": {"attacks": [
        {"name": "tabular_backdoor", "rates": [0.1]}]}})
    from advkit.audit import poisoning_stages

    monkeypatch.setattr(poisoning_stages, "run_stage", lambda *a: pytest.fail("a stage ran"))
    with pytest.raises(AuditSpecError, match="tabular_backdoor does not fit the image data"):
        runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)


def test_the_shared_trainer_caches_by_data_recipe_and_seed(tmp_path):
    from advkit.audit.manifest import sha256_state_dict
    from advkit.data import load
    from advkit.models.cache import Recipe, train_recipe

    ds = load("digits")
    x, y = ds.x_train[:200], ds.y_train[:200]
    r = Recipe(zoo="mlp", epochs=2, lr=0.01, lr_schedule="cyclic", optimizer="sgd",
               kwargs={"hidden": [8]})
    m1, f1 = train_recipe(x, y, r, info=ds.info, seed=3)
    m2, f2 = train_recipe(x, y, r, info=ds.info, seed=3)
    sha = sha256_state_dict(m1.state_dict())
    assert f1["trained_now"] and not f2["trained_now"] and f1["cache"] == f2["cache"]
    assert sha256_state_dict(m2.state_dict()) == sha and f2["history"] == f1["history"]
    _, f3 = train_recipe(x, y, r, info=ds.info, seed=4)
    _, f4 = train_recipe(x, y.flip(0), r, info=ds.info, seed=3)
    assert len({f1["cache"], f3["cache"], f4["cache"]}) == 3
    import shutil

    shutil.rmtree(f1["cache"])  # a vanished entry is trained again, identically
    m5, f5 = train_recipe(x, y, r, info=ds.info, seed=3)
    assert f5["trained_now"] and sha256_state_dict(m5.state_dict()) == sha
    with pytest.raises(InvalidParameterError, match="optimizer"):
        Recipe(zoo="mlp", optimizer="rmsprop")


# ---------------------------------------------------------------- kill -9 during training

KILL_SPEC = {
    "title": "poisoning resume",
    "seed": 0,
    "dataset": "digits",
    "model": {"zoo": "mlp", "epochs": 1, "lr": 0.01, "kwargs": {"hidden": [32]}},
    # each training stage takes seconds, so the kill lands inside the second one
    "poisoning": {"attacks": [{"name": "badnets", "rates": [0.05, 0.1],
                               "params": {"size": 2}}],
                  "training": {"epochs": 20}},
}
FIRST, KILLED = "poisoning/badnets/rate=0.05", "poisoning/badnets/rate=0.1"


def _cli(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "advkit", "audit", str(spec), "--out", str(out),
            "--no-progress"]


def _stored(db: Path) -> set[str]:
    if not db.exists():
        return set()
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return {r[0] for r in con.execute("SELECT scenario_id FROM scenarios")}
        finally:
            con.close()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return set()


def test_kill_during_training_resumes_at_that_stage(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    spec = _write(tmp_path, KILL_SPEC)
    out, db = tmp_path / "out", tmp_path / "out" / ".advkit-progress.sqlite"
    proc = subprocess.Popen(_cli(spec, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while f"{FIRST}/measure" not in _stored(db):  # the first poisoned model is done
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the first poisoned model never finished"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)  # the next stage, its training, is running now
    finally:
        proc.kill()
        proc.wait()
    models = Path(os.environ["ADVKIT_CACHE_DIR"]) / "models"
    done = _stored(db)
    assert f"{FIRST}/train" in done and f"{KILLED}/train" not in done, (
        "the second training finished before the kill: make it longer")
    assert len(list(models.iterdir())) == 3  # the audited model, the clean and the first poisoned

    resumed = subprocess.run(_cli(spec, out), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert len(list(models.iterdir())) == 4
    again = subprocess.run(_cli(spec, tmp_path / "out2"), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr

    rep = json.loads((out / "report.json").read_text())
    ref = json.loads((tmp_path / "out2" / "report.json").read_text())
    from_store = {s["id"]: s["from_store"] for s in rep["scenarios"]}
    assert from_store == {"poisoning/clean/train": True, "poisoning/clean/measure": True,
                          f"{FIRST}/train": True, f"{FIRST}/measure": True,
                          f"{KILLED}/train": False, f"{KILLED}/measure": False}
    assert not any(s["from_store"] for s in ref["scenarios"])
    assert stable(rep) == stable(ref)
    succ = {s["id"]: s["metrics"]["attack_success"] for s in rep["scenarios"]
            if s["id"].endswith("/measure") and "clean" not in s["id"]}
    assert all(0 <= v["value"] <= 1 and v["n"] > 0 for v in succ.values())


def test_neural_cleanse_entries_share_one_search_and_check_the_clean_model(tmp_path, monkeypatch):
    """Two Neural Cleanse entries (unlearn, prune) against one model search its triggers once;
    ``on_clean`` also runs the first against the clean reference model, where a flagged class is
    a false alarm; the report shows each searched model's per-class indices and reversed triggers,
    the attack's true trigger first."""
    from advkit.defenses.detectors.neural_cleanse import NeuralCleanse

    fits = []
    fit = NeuralCleanse.fit

    def counting(self, *a, **k):
        fits.append(1)
        return fit(self, *a, **k)

    monkeypatch.setattr(NeuralCleanse, "fit", counting)
    nc = {"batch_size": 8, "epochs": 3}
    spec = parse_spec({**SPEC, "poisoning": {
        "attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 2, "target": 0}}],
        "mitigations": [{"name": "neural_cleanse", "params": nc, "on_clean": True},
                        {"name": "neural_cleanse", "label": "nc-prune", "repair": "prune",
                         "params": nc}],
        "training": {"epochs": 10}}})
    rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
    assert len(fits) == 2  # the clean model and the poisoned one, not once per entry
    doc = rep.to_dict()
    sc = {s["id"]: s for s in doc["scenarios"]}
    base = "poisoning/badnets/rate=0.1/mitigation="
    unlearn, prune = sc[base + "neural_cleanse"], sc[base + "nc-prune"]
    assert unlearn["per_sample"]["anomaly_index"] == prune["per_sample"]["anomaly_index"]
    assert prune["defense"] == "nc-prune"
    clean = sc["poisoning/clean/mitigation=neural_cleanse"]
    assert clean["metrics"]["attack_success"] is None and "false_alarm" in clean["metrics"]
    alarm = next(f for f in doc["findings"] if f["check"] == "poisoning.neural_cleanse.false_alarm")
    assert alarm["passed"] == (not clean["metrics"]["false_alarm"])
    titles = [s["title"] for s in doc["sections"]]
    assert "Poisoning: Neural Cleanse on the clean model" in titles
    trig = next(s for s in rep.sections
                if s.title == "Poisoning: reversed triggers of badnets model at rate 0.1")
    assert trig.images[0].caption.startswith("the attack's trigger")
    assert trig.images[0].pixels.shape == (8, 8) and trig.images[0].pixels[-1, -1] == 1.0
    assert len(trig.images) == 1 + 10


def test_a_sanitiser_on_the_clean_model_reports_its_cost_not_a_precision(tmp_path):
    """On the clean reference model there is no poison: what a sanitiser flags is removed at
    pure cost, so there is no precision or recall, only the samples dropped and the accuracy."""
    spec = parse_spec({**SPEC, "poisoning": {
        "attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 2, "target": 0}}],
        "mitigations": [{"name": "spectral_signatures", "on_clean": True},
                        {"name": "spectre", "params": {"n_components": 8}}],
        "training": {"epochs": 5}}})
    rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
    doc = rep.to_dict()
    sc = {s["id"]: s for s in doc["scenarios"]}
    clean = sc["poisoning/clean/mitigation=spectral_signatures"]["metrics"]
    train = sc["poisoning/clean/train"]["metrics"]
    assert clean["precision"] is None and clean["recall"] is None
    assert 0 < clean["n_flagged"] < train["n_train"]
    assert clean["attack_success"] is None and clean["clean_accuracy"]["n"] > 0
    table = next(t for s in doc["sections"] if s["title"] == "Poisoning: mitigations"
                 for t in s["tables"] if t["title"].startswith("Training-set detectors"))
    assert [r[0] for r in table["rows"]] == ["clean", "badnets", "badnets"]
    spectre = sc["poisoning/badnets/rate=0.1/mitigation=spectre"]["metrics"]
    assert spectre["recall"]["n"] == sc["poisoning/badnets/rate=0.1/train"]["metrics"]["n_poisoned"]
    finding = next(f for f in doc["findings"]
                   if f["scenario"] == "poisoning/clean/mitigation=spectral_signatures")
    assert "against the same model before it" in finding["why"]


def test_strip_filters_the_poisoned_model_and_is_measured_behind_its_filter(tmp_path):
    """STRIP (Gao et al. 2019) rejects inputs at test time: the model behind it is measured on the
    same points as without it, a rejected input counting as a clean error and a failed attack.
    So success behind STRIP is at most its false acceptance and at most the success without it,
    and accuracy behind it loses at most the false rejections."""
    spec = parse_spec({**SPEC, "poisoning": {
        "attacks": [{"name": "badnets", "rates": [0.1], "params": {"size": 2, "target": 0}}],
        "mitigations": [{"name": "strip", "params": {"n_overlays": 20}, "on_clean": True}],
        "training": {"epochs": 10}}})
    rep = runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
    doc = rep.to_dict()
    sc = {s["id"]: s for s in doc["scenarios"]}
    m = sc["poisoning/badnets/rate=0.1/mitigation=strip"]["metrics"]
    before = sc["poisoning/badnets/rate=0.1/measure"]["metrics"]
    far, frr = m["false_acceptance"]["value"], m["false_rejection"]["value"]
    behind = m["attack_success"]["value"]
    table = next(t for s in doc["sections"] if s["title"] == "Poisoning: mitigations"
                 for t in s["tables"] if t["title"].startswith("STRIP"))
    row = next(r for r in table["rows"] if r[0] == "badnets")
    without_strip = row[6]["value"]
    assert before["attack_success"]["value"] > 0.5  # the backdoor took
    assert behind <= far + 1e-12 and behind <= without_strip + 1e-12
    assert behind < without_strip  # STRIP stops some triggered inputs on this model
    assert 0 <= frr < 0.05  # the threshold is set at 1 % of the defender's clean data
    assert m["clean_accuracy_drop"] <= 100 * frr + 1e-9
    clean = sc["poisoning/clean/mitigation=strip"]["metrics"]
    assert clean["attack_success"] is None and clean["false_acceptance"] is None
    assert clean["false_rejection"]["n"] == m["false_rejection"]["n"]


def test_strip_on_tabular_data_is_refused_before_any_stage(tmp_path):
    spec = parse_spec({**SPEC, "dataset": "breast_cancer", "poisoning": {
        "attacks": [{"name": "label_flip", "rates": [0.1]}], "mitigations": ["strip"]}})
    with pytest.raises(AuditSpecError, match="strip superimposes images"):
        runner.run_audit(spec, out_dir=tmp_path / "out", spec_sha256="x", progress=False)
