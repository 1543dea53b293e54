"""scikit-learn Pipelines: affine steps + a linear model become exact torch logits and gradients;
any other Pipeline is a labels-and-probabilities target."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.sklearn_torch import linear_form


def _data(k=3, d=6, n=240):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(n, d)) * np.linspace(0.5, 3, d) + np.linspace(-1, 1, d)
    score = x[:, 0] + x[:, 1] - x[:, 2]
    return x, np.digitize(score, np.quantile(score, np.linspace(0, 1, k + 1)[1:-1]))


PIPELINES = {
    "standard": lambda: [StandardScaler()],
    "standard-no-mean": lambda: [StandardScaler(with_mean=False)],
    "minmax+passthrough": lambda: [MinMaxScaler(), "passthrough"],
    "maxabs": lambda: [MaxAbsScaler()],
    "robust-center-only": lambda: [RobustScaler(with_scaling=False)],
    "robust-scale-only": lambda: [RobustScaler(with_centering=False)],
    "robust+pca-whiten": lambda: [RobustScaler(), PCA(n_components=4, whiten=True)],
    "standard+pca": lambda: [StandardScaler(), PCA(n_components=5)],
}


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_affine_pipeline_logits_equal_decision_function(name, k):
    x, y = _data(k)
    pipe = make_pipeline(*PIPELINES[name](), LogisticRegression(max_iter=2000)).fit(x, y)
    target = SklearnTarget(contract=InputContract(shape=(6,), n_classes=k, bounds=(-2.0, 4.0)),
                           estimator=pipe)
    caps = target.capabilities
    assert caps.gradients and caps.logits
    xt = torch.as_tensor(x[:50], dtype=torch.float32)
    logits = target.logits(xt).double().numpy()
    df = pipe.decision_function(x[:50])
    expected = np.stack([np.zeros_like(df), df], 1) if k == 2 else df
    assert np.allclose(logits, expected, atol=1e-4)
    assert np.allclose(target.probabilities(xt).numpy(), pipe.predict_proba(x[:50]), atol=1e-5)
    assert np.array_equal(target.labels(xt).numpy(), pipe.predict(x[:50]))


def test_gradient_matches_finite_differences_of_the_pipeline():
    x, y = _data(3)
    pipe = make_pipeline(StandardScaler(), PCA(n_components=4, whiten=True),
                         LogisticRegression(max_iter=2000)).fit(x, y)
    target = SklearnTarget(contract=InputContract(shape=(6,), n_classes=3, bounds=(-2.0, 4.0)),
                           estimator=pipe)
    x0 = x[:4]
    xt = torch.as_tensor(x0, dtype=torch.float32).requires_grad_(True)
    target.logits(xt)[:, 1].sum().backward()
    h = 1e-4
    fd = np.stack([(pipe.decision_function(x0 + h * e)[:, 1] - pipe.decision_function(
        x0 - h * e)[:, 1]) / (2 * h) for e in np.eye(6)], 1)
    assert np.allclose(xt.grad.numpy(), fd, rtol=1e-3, atol=1e-4)


def test_non_affine_pipelines_are_labels_and_probabilities_only():
    x, y = _data(3)
    forest = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5,
                                                                    random_state=0)).fit(x, y)
    clipped = make_pipeline(MinMaxScaler(clip=True), LogisticRegression()).fit(x, y)
    contract = InputContract(shape=(6,), n_classes=3, bounds=(-2.0, 4.0))
    for pipe in (forest, clipped):
        assert linear_form(pipe) is None
        target = SklearnTarget(contract=contract, estimator=pipe)
        assert not target.capabilities.gradients and target.capabilities.probabilities
        xt = torch.as_tensor(x[:20], dtype=torch.float32)
        assert np.allclose(target.probabilities(xt).numpy(), pipe.predict_proba(x[:20]),
                           atol=1e-6)
    ridge = make_pipeline(MaxAbsScaler(), RidgeClassifier()).fit(x, y)  # no predict_proba
    w, b = linear_form(ridge)
    assert np.allclose(x[:10] @ w.T + b, ridge.decision_function(x[:10]))
