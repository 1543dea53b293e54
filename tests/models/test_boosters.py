"""XGBoost JSON and LightGBM text / dump JSON models: detected by content, loaded as data (no
trust flag), wrapped as labels-and-probabilities targets."""

import json

import numpy as np
import pytest
import torch

from advkit.errors import InputContractError
from advkit.models.io import load_model, scan_model_file, target_for
from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget


def _data(k):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(300, 5)).astype(np.float32)
    score = x[:, 0] + x[:, 1] - x[:, 2]
    return x, np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))


def _check_target(loaded, x, expected, k):
    target = target_for(loaded, InputContract(shape=(5,), n_classes=k))
    assert isinstance(target, SklearnTarget)
    caps = target.capabilities
    assert caps.probabilities and caps.labels and not caps.gradients
    proba = target.probabilities(torch.as_tensor(x[:40])).numpy()
    assert np.allclose(proba, expected, atol=1e-5)
    assert np.array_equal(target.labels(torch.as_tensor(x[:40])).numpy(), expected.argmax(1))


@pytest.mark.parametrize("k", [2, 3])
def test_xgboost_json_model(tmp_path, k):
    xgboost = pytest.importorskip("xgboost")
    x, y = _data(k)
    clf = xgboost.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(x, y)
    path = tmp_path / "m.json"
    clf.save_model(path)
    res = scan_model_file(path)
    assert (res.format, res.verdict) == ("xgboost", "safe")
    loaded = load_model(path)
    assert loaded.kind == "xgboost"
    _check_target(loaded, x, clf.predict_proba(x[:40]), k)


@pytest.mark.parametrize("k", [2, 3])
def test_lightgbm_text_and_dump_json_models(tmp_path, k):
    lightgbm = pytest.importorskip("lightgbm")
    x, y = _data(k)
    params = {"objective": "binary" if k == 2 else "multiclass", "verbose": -1, "num_threads": 1,
              "num_leaves": 7, **({"num_class": k} if k > 2 else {})}
    booster = lightgbm.train(params, lightgbm.Dataset(x, label=y), num_boost_round=8)
    p1 = booster.predict(x[:40])
    expected = np.stack([1 - p1, p1], 1) if k == 2 else p1
    text = tmp_path / "m.txt"
    booster.save_model(str(text))
    assert scan_model_file(text).format == "lightgbm"
    _check_target(load_model(text), x, expected, k)
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(booster.dump_model()))
    assert scan_model_file(dump).format == "lightgbm-json"
    _check_target(load_model(dump), x, expected, k)  # evaluated by advkit, same probabilities


def test_lookalikes_and_regressors_are_typed_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"learner": {"truncated": ')
    res = scan_model_file(bad)
    assert res.format == "unknown" and "xgboost" in res.issues[0]
    with pytest.raises(InputContractError, match="xgboost"):
        load_model(bad)
    xgboost = pytest.importorskip("xgboost")
    x, y = _data(2)
    reg = xgboost.XGBRegressor(n_estimators=2, n_jobs=1).fit(x, y.astype(float))
    reg.save_model(tmp_path / "reg.json")
    with pytest.raises(InputContractError, match="not a classifier"):
        load_model(tmp_path / "reg.json")
