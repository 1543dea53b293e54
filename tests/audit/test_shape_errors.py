"""Data of one shape into a model that takes another (issue 11, item 7): a typed error that names
the shapes and the reshape, printed by the CLI without a traceback, exit 2."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from torch import nn

from advkit.cli.main import run
from advkit.errors import ModelBehaviorError, ModelInputShapeError
from advkit.targets.base import InputContract
from advkit.targets.torch import TorchTarget


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ADVKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("CI", "true")


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class FlatMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x)


def _npz(tmp_path, shape) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((120, *shape)).astype(np.float32)
    path = tmp_path / "data.npz"
    np.savez(path, x=x, y=rng.integers(0, 10, 120))
    return path.name


def _torchscript(tmp_path, module) -> str:
    path = tmp_path / "model.pt"
    torch.jit.script(module.eval()).save(str(path))
    return path.name


def _exits_2(tmp_path, capsys, model: str, data: str) -> str:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"dataset: {{path: {data}}}\nmodel: {model}\nevaluation: {{n_samples: 20}}\n"
                    "attacks: [{name: fgsm, eps: [0.1]}]\n")
    out = tmp_path / "out"
    code = run(["audit", str(spec), "--out", str(out), "--no-progress"])
    cap = capsys.readouterr()
    text = cap.out + cap.err
    assert code == 2, text
    assert "Traceback" not in text
    assert not (out / "report.json").exists()
    return " ".join(text.split())


def test_flat_data_into_the_cnn_zoo_model(tmp_path, capsys, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("training started before the shape was checked")

    # (the module, not the package attribute of the same name, which is the function)
    monkeypatch.setattr(importlib.import_module("advkit.models.train"), "train", refuse)
    text = _exits_2(tmp_path, capsys, "{zoo: cnn-small, epochs: 1}", _npz(tmp_path, (64,)))
    assert "input_shape=(64,)" in text
    assert "use the 'mlp' zoo model for flat feature vectors" in text
    assert "(n, 1, 8, 8)" in text


def test_flat_data_into_a_torchscript_cnn(tmp_path, capsys):
    text = _exits_2(tmp_path, capsys, f"{{path: {_torchscript(tmp_path, SmallCNN())}}}",
                    _npz(tmp_path, (64,)))
    assert "ModelInputShapeError" in text
    assert "the model SmallCNN raised RuntimeError on inputs of shape (20, 64)" in text
    assert "input to conv2d" in text  # torch's own words, without its TorchScript traceback
    assert "store the data's x as (n, 1, 8, 8)" in text and "x.reshape(-1, 1, 8, 8)" in text


def test_images_into_a_torchscript_model_for_flat_features(tmp_path, capsys):
    text = _exits_2(tmp_path, capsys, f"{{path: {_torchscript(tmp_path, FlatMLP())}}}",
                    _npz(tmp_path, (1, 8, 8)))
    assert "ModelInputShapeError" in text
    assert "inputs of shape (20, 1, 8, 8)" in text
    assert "store the data's x as (n, 64)" in text


def test_forward_shape_error_api_names_the_shape_and_reshape():
    target = TorchTarget(contract=InputContract(shape=(64,), n_classes=10), model=SmallCNN().eval())
    with pytest.raises(ModelInputShapeError, match=r"\(5, 64\).*\(n, 1, 8, 8\)"):
        target.labels(torch.rand(5, 64))
    assert issubclass(ModelInputShapeError, ModelBehaviorError)  # callers catching it still do


def test_other_forward_errors_stay_model_behavior_errors():
    class Raises(nn.Module):
        def forward(self, x):
            raise RuntimeError("forward exploded")

    target = TorchTarget(contract=InputContract(shape=(4,), n_classes=3), model=Raises())
    with pytest.raises(ModelBehaviorError, match="forward exploded") as err:
        target.labels(torch.rand(2, 4))
    assert not isinstance(err.value, ModelInputShapeError)
