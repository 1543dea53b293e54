"""Extraction metrics (advkit.evaluation.fidelity): agreement, scoring queries, round trips."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression

from advkit.data import load
from advkit.errors import InputContractError, InvalidParameterError
from advkit.evaluation.fidelity import (
    FidelityReport,
    evaluate_extraction,
    fidelity,
    stolen_labels,
    uniform_points,
)
from advkit.targets.sklearn import SklearnTarget


@pytest.fixture(scope="module")
def target():
    ds = load("breast_cancer")
    clf = LogisticRegression(max_iter=2000).fit(ds.x_train.numpy(), ds.y_train.numpy())
    return SklearnTarget(ds.contract(), estimator=clf, budget=5), ds


def test_agreement_counts_and_budget(target):
    t, ds = target
    x = ds.x_test[:50]
    same = lambda z: torch.as_tensor(t.estimator.predict(z.numpy()))  # noqa: E731
    assert fidelity(t, lambda z: 1 - same(z), x).k == 0  # a stolen model that always disagrees
    # scoring queries go past the victim's budget of 5 (they are not the attacker's)
    rep = evaluate_extraction(t, same, x, ds.y_test[:50],
                              queries=3, n_uniform=100, generator=torch.Generator().manual_seed(0))
    assert rep.test.value == 1.0 and rep.uniform.n == 100 and rep.queries == 3
    assert rep.accuracy.k == rep.victim_accuracy.k
    assert FidelityReport.from_dict(rep.to_dict()) == rep


def test_uniform_points_per_feature_bounds_and_errors(target):
    t, ds = target
    u = uniform_points(lambda z: torch.zeros(len(z), dtype=torch.long), 500, n_classes=2,
                       input_shape=2, bounds=([0, 10], [1, 20]),
                       generator=torch.Generator().manual_seed(0))
    assert u.shape == (500, 2) and float(u[:, 1].min()) >= 10 and float(u[:, 1].max()) <= 20
    assert stolen_labels(torch.nn.Linear(30, 2), ds.x_test[:4]).shape == (4,)
    with pytest.raises(InputContractError, match="at least one"):
        fidelity(t, torch.nn.Linear(30, 2), ds.x_test[:0])
    with pytest.raises(InvalidParameterError, match="n_uniform"):
        evaluate_extraction(t, torch.nn.Linear(30, 2), ds.x_test, queries=1, n_uniform=0)
    with pytest.raises(InvalidParameterError, match="stolen"):
        stolen_labels(object(), ds.x_test[:4])
