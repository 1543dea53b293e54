"""The command line: list/describe read the registry; audit writes the report; bad input exits 2."""

import json
import os
import subprocess
import sys

import pytest

from advkit.cli.main import run

TINY = """
title: tiny
seed: 3
dataset: digits
model: {{zoo: mlp, epochs: 3}}
evaluation: {{n_samples: 60}}
attacks:
  - {{name: fgsm, eps: [0, 0.1]}}
  - {{name: pgd, eps: [0, 0.1], params: {{steps: 5}}}}
{extra}
"""


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def test_list_and_describe(capsys):
    assert run(["list"]) == 0
    out = capsys.readouterr().out
    assert "fgsm" in out and "pgd" in out
    assert run(["describe", "pgd"]) == 0
    out = capsys.readouterr().out
    assert "Madry" in out and "steps" in out and "restarts" in out


def test_unknown_name_exits_2_without_traceback():
    p = subprocess.run(
        [sys.executable, "-m", "advkit.cli.main", "describe", "nope"],
        capture_output=True,
        text=True,
        env={**os.environ, "CI": "true"},
    )
    assert p.returncode == 2
    assert "nope" in p.stderr and "pgd" in p.stderr
    assert "Traceback" not in p.stderr + p.stdout


def test_bad_spec_exits_2(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text("dataset: digits\nmodel: {zoo: mlp}\nattacks: [{name: nope}]\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 2
    assert "unknown attack 'nope'" in capsys.readouterr().err


def test_audit_spec_writes_report_resumes_and_gates(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(TINY.format(extra=""))
    out = tmp_path / "r"
    assert run(["audit", str(spec), "--out", str(out)]) == 0
    md = capsys.readouterr().out
    assert "fgsm" in md and "pgd" in md
    doc = json.loads((out / "report.json").read_text())
    assert doc["schema_version"] and doc["manifest"]["seed"] == 3
    assert (
        len(doc["manifest"]["sha256"]["model"]) == 64
        and len(doc["manifest"]["sha256"]["spec"]) == 64
    )
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    first = {s["id"]: s["metrics"]["robust_accuracy"]["k"] for s in doc["scenarios"]}
    assert len(first) == 6  # 4 attack scenarios + the worst case at eps 0 and 0.1
    assert sum(s["kind"] == "worst_case" for s in doc["scenarios"]) == 2
    # a second run resumes every scenario from the store and reports the same numbers
    assert run(["audit", str(spec), "--out", str(out), "--fail-under", "clean_accuracy=0.5"]) == 0
    doc2 = json.loads((out / "report.json").read_text())
    assert {s["id"]: s["metrics"]["robust_accuracy"]["k"] for s in doc2["scenarios"]} == first
    # a missed threshold exits 1 and says which
    assert (
        run(["audit", str(spec), "--out", str(out), "--fail-under", "robust_accuracy@0.1=1.0"])
        == 1
    )
    assert "robust_accuracy@0.1" in capsys.readouterr().err
    assert run(["audit", str(spec), "--out", str(out), "--fail-under", "nonsense=1"]) == 2


def test_train_then_audit_saved_model_and_refuse_pickle(tmp_path, capsys):
    mdir = tmp_path / "m"
    assert (
        run(
            [
                "train",
                "--dataset",
                "digits",
                "--model",
                "mlp",
                "--epochs",
                "2",
                "--out",
                str(mdir),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (mdir / "model.safetensors").is_file() and (mdir / "config.json").is_file()
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "dataset: digits\nmodel: {path: m}\nevaluation: {n_samples: 20}\n"
        "attacks: [{name: fgsm, eps: [0.1]}]\n"
    )
    assert run(["audit", str(spec), "--out", str(tmp_path / "r")]) == 0
    import torch

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    torch.save(net, tmp_path / "m.pt")  # a whole pickled module: loading it runs pickle code
    spec.write_text(
        "dataset: digits\nmodel: {path: m.pt}\nevaluation: {n_samples: 20}\n"
        "attacks: [{name: fgsm, eps: [0.1]}]\n"
    )
    capsys.readouterr()
    assert run(["audit", str(spec), "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "UnsafeModelError" in err and "pickle" in err and "trust" in err
    with pytest.warns(UserWarning, match="trust"):
        assert run(["audit", str(spec), "--out", str(tmp_path / "r3"), "--trust-pickle"]) == 0


def _train(tmp_path, out, *extra) -> int:
    return run(["train", "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path / out),
                "--no-progress", *extra])


def test_train_poisoned_and_defended(tmp_path, capsys):
    assert _train(tmp_path, "p", "--epochs", "3", "--poison", "badnets", "--poison-rate", "0.1",
                  "--target", "0") == 0
    out = capsys.readouterr().out
    assert "attack success" in out and "clean accuracy" in out
    cfg = json.loads((tmp_path / "p" / "config.json").read_text())
    assert cfg["extra"]["poisoning"]["attack"] == "badnets" and cfg["extra"]["poisoning"]["target"] == 0
    assert _train(tmp_path, "d", "--epochs", "1", "--defense", "trades", "--eps", "0.1") == 0
    cfg = json.loads((tmp_path / "d" / "config.json").read_text())
    assert cfg["extra"]["training"]["defense"] == {"defense": "trades", "eps": 0.1}
    assert _train(tmp_path, "x", "--defense", "nope") == 2
    assert _train(tmp_path, "x", "--poison", "nope") == 2
    assert _train(tmp_path, "x", "--poison", "badnets", "--defense", "pgd-at") == 2
    assert _train(tmp_path, "x", "--poison", "badnets", "--lr-schedule", "cyclic") == 2
    assert _train(tmp_path, "x", "--lr-schedule", "cosine") == 2
    assert _train(tmp_path, "x", "--defense", "fast-fgsm", "--steps", "5") == 2
    assert _train(tmp_path, "x", "--defense", "pgd-at", "--steps", "0") == 2
    assert _train(tmp_path, "a", "--epochs", "1", "--defense", "pgd-at", "--eps", "0.1",
                  "--steps", "2", "--step-size", "0.05") == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["extra"]["training"]["defense"] == {"defense": "pgd-at", "eps": 0.1,
                                                   "warmup_batches": 0, "steps": 2,
                                                   "step_size": 0.05}
    assert _train(tmp_path, "f", "--epochs", "1", "--defense", "fast-fgsm", "--eps", "0.1",
                  "--lr-schedule", "cyclic") == 0
    cfg = json.loads((tmp_path / "f" / "config.json").read_text())
    assert cfg["extra"]["training"]["lr_schedule"] == "cyclic"
