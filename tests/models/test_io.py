import json
import operator
import os
import pickle
import posix
import shutil

import joblib
import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from advkit.data.info import Dataset, DatasetInfo
from advkit.errors import AdvkitWarning, InputContractError, InvalidParameterError, UnsafeModelError
from advkit.models.io import load_model, save_model, scan_model_file, target_for
from advkit.models.scan import sha256_file
from advkit.models.zoo import build
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget


class _Payload:
    """Pickles as a call to os.system: such a file must never be loaded."""

    def __reduce__(self):
        return (os.system, ("true",))


def _model(name="cnn-small", seed=0, **kw):
    shape = {"cnn-small": (1, 8, 8), "mlp": (1, 8, 8)}[name]
    gen = torch.Generator().manual_seed(seed)
    return build(name, input_shape=shape, n_classes=10, generator=gen, **kw)


def _x(n=5):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _fitted(cls=LogisticRegression, **kw):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4))
    y = (x[:, 0] > 0).astype(int)
    return cls(**kw).fit(x, y), x


def _record_system_calls(monkeypatch) -> list:
    """Replace posix.system so that loading a payload, if it ever happened, would be recorded."""
    calls = []
    monkeypatch.setattr(posix, "system", lambda cmd: calls.append(cmd) or 0)
    return calls


@pytest.mark.parametrize("name,kw", [("cnn-small", {}), ("mlp", {"hidden": (7, 5)})])
def test_save_load_round_trip_gives_equal_outputs(tmp_path, name, kw):
    model = _model(name, **kw)
    info = DatasetInfo(name="digits", shape=(1, 8, 8), n_classes=10)
    out = save_model(model, tmp_path / "m", dataset_info=info, extra={"note": "x"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["zoo"] == name and cfg["input_shape"] == [1, 8, 8] and cfg["n_classes"] == 10
    assert cfg["dataset"]["name"] == "digits" and cfg["extra"] == {"note": "x"}
    assert cfg["weights_sha256"] == sha256_file(out / "model.safetensors")
    for path in (out, out / "model.safetensors"):
        loaded = load_model(path)
        assert loaded.kind == "torch" and loaded.sha256 == cfg["weights_sha256"]
        assert not loaded.model.training
        with torch.no_grad():
            assert torch.equal(loaded.model(_x()), model(_x()))
    assert scan_model_file(out).verdict == "safe"


def test_save_model_refuses_what_it_cannot_describe(tmp_path):
    with pytest.raises(InvalidParameterError, match="advkit.models.build"):
        save_model(torch.nn.Linear(2, 2), tmp_path / "m")
    with pytest.raises(InvalidParameterError, match="dataset_info"):
        save_model(_model(), tmp_path / "m",
                   dataset_info=DatasetInfo(name="mnist", shape=(1, 28, 28), n_classes=10))
    with pytest.raises(InvalidParameterError, match="extra"):
        save_model(_model(), tmp_path / "m", extra={"f": object()})


def test_bad_paths_and_configs_are_clear_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match="existing model file"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputContractError, match="config.json"):
        load_model(tmp_path / "empty")
    out = save_model(_model(), tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**cfg, "zoo": "resnet"}))
    with pytest.raises(InputContractError, match="resnet") as exc:
        load_model(out)
    assert "cnn-small" in str(exc.value)
    (out / "config.json").write_text("{not json")
    with pytest.raises(InputContractError, match="JSON"):
        load_model(out)
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / "model.safetensors", bare / "w.safetensors")
    with pytest.raises(InputContractError, match="config.json"):
        load_model(bare / "w.safetensors")
    junk = tmp_path / "model.onnx"
    junk.write_bytes(b"\x08\x07junk that is no model")
    with pytest.raises(InputContractError, match="not a model format"):
        load_model(junk)
    with pytest.raises(InvalidParameterError, match="allow_dangerous"):
        load_model(out, allow_dangerous=True)


def test_tampered_corrupt_and_mismatched_weights_are_refused(tmp_path):
    out = save_model(_model(), tmp_path / "m")
    weights = out / "model.safetensors"
    cfg = json.loads((out / "config.json").read_text())
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # flip bits in the last weight
    weights.write_bytes(bytes(data))
    with pytest.raises(InputContractError, match="SHA-256"):
        load_model(out)
    del cfg["weights_sha256"]
    (out / "config.json").write_text(json.dumps(cfg))
    load_model(out)  # without a recorded hash the (valid) tensors load
    weights.write_bytes(bytes(data[:40]))
    with pytest.raises(InputContractError, match="safetensors"):
        load_model(out)
    other = save_model(_model("mlp", hidden=(7,)), tmp_path / "other")
    shutil.copy(other / "model.safetensors", weights)
    with pytest.raises(InputContractError) as exc:
        load_model(out)
    msg = str(exc.value)
    assert "missing ['features.0.bias', 'features.0.weight'" in msg
    assert "classifier.0.weight: file (7, 64) vs model (128, 1024)" in msg
    cfg["zoo"], cfg["kwargs"] = "mlp", {"hidden": [9]}  # same keys as the weights, other shapes
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputContractError, match="wrong shapes"):
        load_model(out)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:DeprecationWarning")
def test_torchscript_archive_loads_without_trust(tmp_path):
    model = _model()
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    res = scan_model_file(path)
    assert (res.format, res.verdict, res.dangerous) == ("torchscript", "safe", {})
    loaded = load_model(path)
    assert loaded.kind == "torchscript" and loaded.sha256 == sha256_file(path)
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), model(_x()))


def test_skops_round_trip(tmp_path):
    import skops.io as sio

    est, x = _fitted()
    sio.dump(est, tmp_path / "lr.skops")
    loaded = load_model(tmp_path / "lr.skops")
    assert loaded.kind == "sklearn"
    np.testing.assert_array_equal(loaded.model.predict_proba(x), est.predict_proba(x))
    forest, x = _fitted(RandomForestClassifier, n_estimators=3, random_state=0)
    sio.dump(forest, tmp_path / "rf.skops")
    with pytest.raises(UnsafeModelError) as exc:
        load_model(tmp_path / "rf.skops")
    assert "sklearn.tree._tree.Tree" in str(exc.value) and "trust_pickle" in str(exc.value)
    with pytest.warns(AdvkitWarning, match="trust_pickle"):
        loaded = load_model(tmp_path / "rf.skops", trust_pickle=True)
    np.testing.assert_array_equal(loaded.model.predict(x), forest.predict(x))


@pytest.mark.parametrize("trust", [False, True])
def test_malicious_pickle_is_refused_even_when_trusted(tmp_path, monkeypatch, trust):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(_Payload()))
    calls = _record_system_calls(monkeypatch)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(path, trust_pickle=trust)
    msg = str(exc.value)
    assert "posix.system" in msg and "os.system" in msg
    assert "trust_pickle" in msg and "arbitrary code" in msg
    if trust:
        assert "allow_dangerous" in msg
    assert calls == []


def test_torch_state_dict_needs_trust(tmp_path):
    model = _model()
    out = save_model(model, tmp_path / "m")
    path = out / "weights.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "trust_pickle" in msg and "safetensors" in msg and "no known-dangerous" in msg
    with pytest.warns(AdvkitWarning, match="trust_pickle=True"):
        loaded = load_model(path, trust_pickle=True)
    assert loaded.kind == "torch" and loaded.config["zoo"] == "cnn-small"
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), model(_x()))
    alone = tmp_path / "alone.pt"
    shutil.copy(path, alone)
    with pytest.warns(AdvkitWarning), pytest.raises(InputContractError, match="state dict"):
        load_model(alone, trust_pickle=True)


def test_full_torch_module_loads_only_when_trusted(tmp_path):
    model = _model()
    path = tmp_path / "full.pth"
    torch.save(model, path)
    with pytest.raises(UnsafeModelError, match="advkit.models.zoo.ZooNet"):
        load_model(path)
    with pytest.warns(AdvkitWarning):
        loaded = load_model(path, trust_pickle=True)
    with torch.no_grad():
        assert torch.equal(loaded.model(_x()), model(_x()))


@pytest.mark.parametrize("compress", [0, 3])
def test_joblib_sklearn_model_needs_trust(tmp_path, compress):
    est, x = _fitted()
    path = tmp_path / "model.joblib"
    joblib.dump(est, path, compress=compress)
    with pytest.raises(UnsafeModelError) as exc:
        load_model(path)
    msg = str(exc.value)
    assert "joblib" in msg and "skops.io.dump" in msg and "trust_pickle" in msg
    with pytest.warns(AdvkitWarning, match="joblib"):
        loaded = load_model(path, trust_pickle=True)
    assert loaded.kind == "sklearn" and loaded.sha256 == sha256_file(path)
    np.testing.assert_array_equal(loaded.model.predict_proba(x), est.predict_proba(x))


def test_dangerous_import_needs_allow_dangerous_too(tmp_path):
    est, x = _fitted()
    est.extra_ = operator.itemgetter(0)  # harmless to load, but operator.* is on the danger list
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(est))
    for kw in ({}, {"trust_pickle": True}):
        with pytest.raises(UnsafeModelError, match="operator.itemgetter"):
            load_model(path, **kw)
    with pytest.warns(AdvkitWarning, match="operator.itemgetter"):
        loaded = load_model(path, trust_pickle=True, allow_dangerous=True)
    np.testing.assert_array_equal(loaded.model.predict(x), est.predict(x))


def test_target_for_builds_the_matching_target(tmp_path):
    info = DatasetInfo(name="toy", shape=(1, 8, 8), n_classes=10)
    x = _x(6)
    ds = Dataset(x, torch.zeros(6, dtype=torch.long), x, torch.zeros(6, dtype=torch.long), info)
    loaded = load_model(save_model(_model(), tmp_path / "m"))
    assert isinstance(target_for(loaded, ds), TorchTarget)
    est, _ = _fitted()
    z, labels = torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)
    tab = Dataset(z, labels, z, labels, DatasetInfo(name="toy", shape=(4,), n_classes=2))
    assert isinstance(target_for(est, tab), SklearnTarget)
    with pytest.raises(InvalidParameterError):
        target_for(object(), ds)
