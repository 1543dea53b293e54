"""Equation-solving extraction (Tramèr et al. 2016, §4.1): exactness oracles and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from advkit.attacks.privacy.extraction_equations import EquationSolving, as_oracle
from advkit.data import load
from advkit.errors import (
    IncompatibleTargetError,
    InputContractError,
    InvalidParameterError,
    ModelBehaviorError,
)
from advkit.evaluation.fidelity import evaluate_extraction
from advkit.models.train import train
from advkit.models.zoo import build
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget


@pytest.fixture(scope="module")
def cancer():
    ds = load("breast_cancer")
    clf = LogisticRegression(max_iter=5000).fit(ds.x_train.numpy().astype(np.float64),
                                                ds.y_train.numpy())
    return ds, clf


def _callable(clf):
    return lambda x: clf.predict_proba(x.numpy())


def test_binary_lr_exact_from_d_plus_1_queries(cancer):
    ds, clf = cancer
    d = ds.x_train.shape[1]
    # a float64 API: the recovered parameters are sklearn's to rounding
    r = EquationSolving().extract(_callable(clf), n_classes=2, input_shape=d, bounds=(0, 1))
    assert r.method == "exact" and r.queries == d + 1
    err = max(np.abs(r.weight.numpy() - clf.coef_).max(),
              np.abs(r.bias.numpy() - clf.intercept_).max())
    assert err < 1e-6
    # through advkit's SklearnTarget (float32 weights inside): still below 1e-6
    t = SklearnTarget(ds.contract(), estimator=clf)
    r = EquationSolving().extract(t)
    assert r.queries == d + 1 and t.queries == d + 1
    assert np.abs(r.weight.numpy() - clf.coef_).max() < 1e-6
    assert np.abs(r.bias.numpy() - clf.intercept_).max() < 1e-6
    rep = evaluate_extraction(t, r.model, ds.x_test, ds.y_test, queries=r.queries,
                              n_uniform=2000, generator=torch.Generator().manual_seed(0))
    assert rep.test.value == 1.0 and rep.uniform.value == 1.0 and rep.queries == d + 1


def test_multinomial_lr_by_loss_minimisation_breast_cancer(cancer):
    ds, clf = cancer
    t = SklearnTarget(ds.contract(), estimator=clf)
    r = EquationSolving(method="loss").extract(t, generator=torch.Generator().manual_seed(0))
    assert r.method == "loss" and r.queries == t.queries == 2 * (ds.x_train.shape[1] + 1)
    rep = evaluate_extraction(t, r.model, ds.x_test, ds.y_test, queries=r.queries,
                              n_uniform=2000, generator=torch.Generator().manual_seed(1))
    assert rep.test.value == 1.0 and rep.uniform.value == 1.0, rep.to_dict()
    assert rep.accuracy.k == rep.victim_accuracy.k


def test_multinomial_lr_ten_classes():
    ds = load("digits")
    x = ds.x_train.reshape(len(ds.x_train), -1).numpy().astype(np.float64)
    clf = LogisticRegression(max_iter=3000).fit(x, ds.y_train.numpy())
    victim = _callable(clf)
    kw = dict(n_classes=10, input_shape=64, bounds=(0, 1))
    r = EquationSolving().extract(victim, generator=torch.Generator().manual_seed(0), **kw)
    assert r.method == "loss" and r.queries == 65 * 10
    xt = ds.x_test.reshape(len(ds.x_test), -1)
    rep = evaluate_extraction(victim, r.model, xt, ds.y_test, queries=r.queries, n_uniform=1000,
                              generator=torch.Generator().manual_seed(1), **kw)
    assert rep.test.value == 1.0 and rep.uniform.value >= 0.998, rep.to_dict()


def test_small_mlp_by_loss_minimisation(cancer):
    ds, _ = cancer
    g = torch.Generator().manual_seed(0)
    victim = build("mlp", input_shape=(30,), n_classes=2, hidden=(4,), generator=g)
    train(victim, ds.x_train, ds.y_train, epochs=30, batch_size=64, lr=1e-2, generator=g,
          progress=False)
    t = TorchTarget(ds.contract(), model=victim)
    atk = EquationSolving(architecture="mlp", hidden=(4,), queries=1000, steps=300)
    r = atk.extract(t, generator=torch.Generator().manual_seed(1))
    assert r.queries == 1000 and r.loss < 1e-3
    rep = evaluate_extraction(t, r.model, ds.x_test, ds.y_test, queries=r.queries,
                              generator=torch.Generator().manual_seed(2))
    assert rep.test.value >= 0.98 and rep.uniform.value >= 0.95, rep.to_dict()


def test_labels_only_victim_is_refused_with_what_is_needed(cancer):
    ds, clf = cancer
    with pytest.raises(IncompatibleTargetError, match="probabilities.*Copycat"):
        EquationSolving().extract(lambda x: clf.predict(x.numpy()), n_classes=2, input_shape=30,
                                  bounds=(0, 1))
    from advkit.defenses.output import LabelsOnly

    t = SklearnTarget(ds.contract(), estimator=clf).with_output(LabelsOnly())
    with pytest.raises(IncompatibleTargetError, match="labels only.*Copycat"):
        EquationSolving().extract(t)
    assert t.queries == 0


def test_errors_wrong_shapes_and_parameters(cancer):
    _, clf = cancer
    with pytest.raises(ModelBehaviorError, match="expected probabilities"):
        EquationSolving().extract(lambda x: np.ones((len(x), 3)) / 3, n_classes=2,
                                  input_shape=30, bounds=(0, 1))
    with pytest.raises(ModelBehaviorError, match="not probabilities"):
        EquationSolving().extract(lambda x: clf.decision_function(x.numpy())[:, None]
                                  .repeat(2, 1), n_classes=2, input_shape=30, bounds=(0, 1))
    with pytest.raises(InvalidParameterError, match="input_shape"):
        EquationSolving().extract(_callable(clf), n_classes=2, bounds=(0, 1))
    with pytest.raises(InvalidParameterError, match="bounds"):
        EquationSolving().extract(_callable(clf), n_classes=2, input_shape=30,
                                  bounds=([0, 0], [1, 1]))
    with pytest.raises(InvalidParameterError, match="method"):
        EquationSolving(architecture="mlp", method="exact")
    with pytest.raises(InvalidParameterError, match="steps"):
        EquationSolving(steps=0)
    o = as_oracle(_callable(clf), n_classes=2, input_shape=30, bounds=(0, 1))
    with pytest.raises(InputContractError, match="reshape"):
        o.ask(torch.zeros(2, 31))
    assert o.queries == 0
