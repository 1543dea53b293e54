"""Decision-based attacks on models without usable gradients (issue 14): a k-NN, an RBF SVM and a
dynamically int8-quantised MLP on breast_cancer, each broken within 1,000 label queries a point.
Measured at seed 0 on the 16 points: k-NN and SVM 16/16 with both attacks; the int8 MLP 11/16
(HopSkipJump) and 4/16 (Sign-OPT)."""

from __future__ import annotations

import warnings

import pytest
import torch

from advkit import registry
from advkit.data import load

ATTACKS = ("hopskipjump", "sign-opt")


@pytest.fixture(scope="module")
def data():
    ds = load("breast_cancer")
    return ds, ds.x_test[:16], ds.y_test[:16]


def _sklearn(ds, est):
    from advkit.targets.sklearn import SklearnTarget

    est.fit(ds.x_train.numpy(), ds.y_train.numpy())
    return SklearnTarget(ds.contract(), estimator=est)


def _quantised(ds):
    from advkit.models.train import train
    from advkit.models.zoo import build
    from advkit.targets.torch import TorchTarget

    g = torch.Generator().manual_seed(0)
    net = build("mlp", input_shape=tuple(ds.info.shape), n_classes=2, generator=g)
    train(net, ds.x_train, ds.y_train, epochs=30, lr=3e-3, generator=g, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        q = torch.ao.quantization.quantize_dynamic(net.eval(), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    assert not any(p.requires_grad for p in q.parameters())  # int8 weights: no gradients
    return TorchTarget(ds.contract(), model=q)


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("model", ["knn", "svm", "int8-mlp"])
def test_decision_attacks_break_gradient_free_models(data, model, attack):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    ds, x, y = data
    target = {"knn": lambda: _sklearn(ds, KNeighborsClassifier(5)),
              "svm": lambda: _sklearn(ds, SVC(random_state=0)),
              "int8-mlp": lambda: _quantised(ds)}[model]()
    res = registry.create(attack, max_queries=1000).attack(
        target, x, y, generator=torch.Generator().manual_seed(0))
    assert int(res.extra["queries"].max()) <= 1000
    fooled = res.success & (res.clean_pred == y)
    assert fooled.float().mean() >= 0.2, (model, attack, res.success_rate())
    assert torch.isfinite(res.distance[fooled]).all()
