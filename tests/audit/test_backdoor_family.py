"""The backdoor family as a new user meets it (issue 12): a BadNets model trained in plain torch
on digits (not by an advkit preset), saved as safetensors + config.json, with its training data
and the poisoned indices in a .npz, audited with ``advkit audit spec.yaml`` and a ``backdoor``
section; a clean model's audit; spec errors before anything runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advkit.attacks.poisoning.badnets import BadNets
from advkit.cli.main import run
from advkit.data import load
from advkit.models.io import save_model
from advkit.models.zoo import build

TARGET = 7
SPEC = """
title: backdoor audit of my digits model
seed: 0
dataset: digits
model: {{path: {model}}}
evaluation: {{n_samples: 200}}
backdoor:
  neural_cleanse: {{epochs: 15, steps_per_epoch: 8, batch_size: 16}}
  clean_samples: 600
{extra}
"""
# the size rule keeps this end-to-end test fast (the default, exclusionary reclassification,
# trains a model per cluster; tests/poisoning/test_detectors.py and the quick preset cover it)
FULL = """\
  mitigations: [unlearn, prune]
  training_data: {path: train.npz, poisoned_indices: poisoned}
  sanitisers: {activation_clustering: {reduction: pca, criterion: size}, spectral: {},
               label_consistency: {epochs: 20, lr_milestones: null}}
  retrain: {epochs: 5, lr: 0.003}
"""


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


def _train(x, y, seed: int):
    """A cnn-small trained the way a user would: a plain Adam loop."""
    g = torch.Generator().manual_seed(seed)
    model = build("cnn-small", input_shape=(1, 8, 8), n_classes=10, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(10):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            b = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """backdoored/ (model + train.npz with the poisoned indices) and clean/ (model only)."""
    d = tmp_path_factory.mktemp("backdoor")
    ds = load("digits")
    attack = BadNets(size=2, position="bottom-right", target=TARGET, rate=0.1)
    p = attack.poison(ds.x_train, ds.y_train, rng=np.random.default_rng(0), n_classes=10)
    bd = _train(p.x, p.y, seed=0)
    xt = ds.x_test[ds.y_test != TARGET]
    success = float((bd(attack.apply_trigger(xt)).argmax(1) == TARGET).float().mean())
    assert success > 0.9  # the backdoor took
    save_model(bd, d / "backdoored" / "model")
    np.savez(d / "backdoored" / "train.npz", x=p.x.numpy(), y=p.y.numpy(),
             poisoned=p.indices.numpy())
    save_model(_train(ds.x_train, ds.y_train, seed=2), d / "clean" / "model")
    return d


def _audit(where, extra: str, capsys):
    spec = where / "spec.yaml"
    spec.write_text(SPEC.format(model="model", extra=extra))
    out = where / "out"
    code = run(["audit", str(spec), "--out", str(out)])
    captured = capsys.readouterr()
    return code, captured, out


def test_backdoored_model_is_flagged_screened_and_mitigated(folder, capsys):
    code, captured, out = _audit(folder / "backdoored", FULL, capsys)
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in report["scenarios"]}
    assert {"backdoor/neural-cleanse", "backdoor/neural-cleanse/unlearn",
            "backdoor/neural-cleanse/prune", "backdoor/activation-clustering",
            "backdoor/spectral", "backdoor/retrain/activation-clustering",
            "backdoor/retrain/spectral"} <= set(sc)
    nc = sc["backdoor/neural-cleanse"]
    index = nc["per_sample"]["anomaly_index"]
    assert TARGET in nc["per_sample"]["flagged"]
    assert index[TARGET] > 2  # Wang et al. 2019's threshold
    assert nc["metrics"]["smallest_trigger_class"] == TARGET
    # the reversed trigger works on the backdoored model, and unlearning takes it away
    assert nc["metrics"]["reversed_trigger_success"]["value"] > 0.8
    assert nc["metrics"]["poisoned_to_label"]["value"] > 0.9
    unlearn = sc["backdoor/neural-cleanse/unlearn"]["metrics"]
    assert unlearn["poisoned_to_label"]["value"] < 0.5
    assert unlearn["clean_accuracy"]["value"] > 0.9
    with np.load(folder / "backdoored" / "train.npz") as z:
        share = len(z["poisoned"]) / len(z["y"])
    for sid in ("backdoor/activation-clustering", "backdoor/spectral"):
        m = sc[sid]["metrics"]
        for key in ("precision", "recall"):
            assert 0.0 <= m[key]["value"] <= 1.0 and m[key]["n"] > 0
            assert m[key]["ci_low"] <= m[key]["value"] <= m[key]["ci_high"]
        assert m["precision_by_chance"] == pytest.approx(share)
    # against a model trained on the clean data, the relabelled samples stand out in class 7 only
    lc = sc["backdoor/label-consistency"]["metrics"]
    assert lc["precision"]["value"] >= 0.9 and lc["recall"]["value"] >= 0.9
    assert sc["backdoor/retrain/label-consistency"]["metrics"]["poisoned_to_label"]["value"] < 0.1
    # the verdict, its figures and the report's sections
    verdict = next(v for v in report["verdicts"] if v["threat"] == "backdoor")
    assert verdict["status"] == "vulnerable"
    assert any(f"class {TARGET}" in f["text"] for f in verdict["figures"])
    titles = [s["title"] for s in report["sections"]]
    assert {"Backdoor: Neural Cleanse on the model", "Backdoor: reversed triggers of the model",
            "Backdoor: mitigations", "Backdoor: training-data sanitisers"} <= set(titles)
    html = (out / "report.html").read_text()
    assert 'alt="Backdoor: reversed triggers of the model: 12 images"' in html  # 10 classes + point + stamped
    assert "data:image/png;base64," in html
    assert "backdoor" in captured.out.lower()


def test_clean_model_is_not_flagged(folder, capsys):
    code, captured, out = _audit(folder / "clean", "  mitigations: [unlearn]\n", capsys)
    assert code == 0, captured.err
    report = json.loads((out / "report.json").read_text())
    sc = {s["id"]: s for s in report["scenarios"]}
    # at this seed the largest index below the median is 0.93; Neural Cleanse does raise false
    # flags on 8x8 digits (one of four other seeds flagged a class of this model at 2.65)
    assert sc["backdoor/neural-cleanse"]["per_sample"]["flagged"] == []
    assert sc["backdoor/neural-cleanse/unlearn"]["metrics"] == {}  # nothing to unlearn
    rows = next(s for s in report["sections"] if s["title"] == "Backdoor: mitigations")
    assert "flagged no class" in json.dumps(rows)
    verdict = next(v for v in report["verdicts"] if v["threat"] == "backdoor")
    assert verdict["status"] in ("robust", "inconclusive")


@pytest.mark.parametrize("extra,match", [
    ("  neural_cleans: {}\n", "neural_cleans"),
    ("  neural_cleanse_typo: 1\n  mitigations: [unlearn]\n", "neural_cleanse_typo"),
    ("  sanitisers: [spectral]\n", "training_data"),
    ("  mitigations: [fine_tune]\n", "mitigations"),
    ("  training_data: {path: train.npz}\n  sanitisers: [clustering]\n", "clustering"),
    ("  training_data: {path: train.npz}\n  sanitisers: {spectral: {expected_rate: 2}}\n",
     "expected_rate"),
])
def test_spec_errors_exit_2_naming_the_field(folder, tmp_path, capsys, extra, match):
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(model=folder / "backdoored" / "model", extra=extra))
    code = run(["audit", str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and match in err, err
    assert not (tmp_path / "out" / "report.json").exists()


def test_bad_neural_cleanse_parameter_and_missing_training_data(folder, tmp_path, capsys,
                                                                monkeypatch):
    from advkit.audit import runner

    # both are spec errors: found when the spec is read, before the model is loaded
    monkeypatch.setattr(runner, "load_subject", lambda *a, **k: pytest.fail("model loaded"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.format(model=folder / "backdoored" / "model", extra="")
                    .replace("epochs: 15", "epochs: 0"))
    assert run(["audit", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "epochs" in capsys.readouterr().err
    spec.write_text(SPEC.format(model=folder / "backdoored" / "model",
                                extra="  training_data: {path: missing.npz}\n"))
    assert run(["audit", str(spec), "--out", str(tmp_path / "out2")]) == 2
    assert "missing.npz" in capsys.readouterr().err


USER_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)
'''


def test_own_class_screens_data_and_says_retraining_was_skipped(tmp_path, capsys, monkeypatch):
    """A user's own class (no advkit recipe): the sanitisers run, retraining is left out with a
    note, and what cannot run on it (prune: no Conv2d) is refused before anything runs."""
    import sys

    from safetensors.torch import save_file

    (tmp_path / "bd_user_net.py").write_text(USER_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bd_user_net", raising=False)
    from bd_user_net import Net

    ds = load("digits")
    p = BadNets(size=2, target=TARGET, rate=0.05).poison(ds.x_train, ds.y_train,
                                                          rng=np.random.default_rng(1))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(80):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(p.x), p.y).backward()
        opt.step()
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    np.savez(tmp_path / "data.npz", x=p.x.numpy()[:, 0], y=p.y.numpy(), bad=p.indices.numpy())
    base = ("dataset: digits\nmodel: {class: \"bd_user_net:Net\", weights: w.safetensors}\n"
            "evaluation: {n_samples: 50}\nbackdoor:\n"
            "  training_data: {path: data.npz, poisoned_indices: bad}\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(base + "  neural_cleanse: false\n  sanitisers: [spectral]\n  retrain: true\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {s["id"] for s in report["scenarios"]} >= {"backdoor/spectral"}
    assert not any(s["id"].startswith("backdoor/retrain") for s in report["scenarios"])
    skipped = [f for f in report["findings"] if f["check"] == "backdoor.retrain"]
    assert skipped and skipped[0]["skipped"] and "backdoor/retrain/spectral" in skipped[0]["why"]
    recall = next(s for s in report["scenarios"] if s["id"] == "backdoor/spectral")["metrics"]
    assert 0 <= recall["recall"]["value"] <= 1 and recall["recall"]["n"] == len(p.indices)
    verdict = next(v for v in report["verdicts"] if v["threat"] == "backdoor")
    assert verdict["status"] == "inconclusive"  # only the data was screened
    capsys.readouterr()
    spec.write_text(base + "  mitigations: [prune]\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "out2")]) == 2
    assert "Conv2d" in capsys.readouterr().err


def test_a_model_without_torch_internals_is_refused_before_any_stage(tmp_path, capsys):
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    ds = load("digits")
    clf = LogisticRegression(max_iter=200).fit(ds.x_train.flatten(1).numpy(), ds.y_train.numpy())
    sio.dump(clf, tmp_path / "clf.skops")
    spec = tmp_path / "spec.yaml"
    spec.write_text("dataset: digits\nmodel: {path: clf.skops}\nbackdoor: {}\n")
    assert run(["audit", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "PyTorch" in err and "backdoor" in err
    assert not (tmp_path / "out" / "report.json").exists()
