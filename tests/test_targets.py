"""Targets: capabilities, exact linear gradients, batching, queries, and every contract violation."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.svm import LinearSVC

from advkit import registry
from advkit.errors import (
    AdvkitWarning,
    BudgetExhausted,
    IncompatibleTargetError,
    InputContractError,
)
from advkit.targets import InputContract, SklearnTarget, TorchTarget


def _net(softmax=False):
    layers = [torch.nn.Flatten(), torch.nn.Linear(16, 3)]
    if softmax:
        layers.append(torch.nn.Softmax(dim=1))
    return torch.nn.Sequential(*layers).eval()


C = InputContract(shape=(1, 4, 4), n_classes=3, bounds=(0.0, 1.0))


@pytest.fixture
def target():
    torch.manual_seed(0)
    return TorchTarget(C, model=_net(), batch_size=4)


def test_batching_and_query_count(target):
    x = torch.rand(10, 1, 4, 4)
    out = target.logits(x)
    assert out.shape == (10, 3)
    assert torch.allclose(out, target.model(x), atol=1e-6)
    assert target.queries == 10


def test_budget_exhausted(target):
    target.budget = 12
    target.labels(torch.rand(10, 1, 4, 4))
    with pytest.raises(BudgetExhausted, match="budget of 12"):
        target.labels(torch.rand(5, 1, 4, 4))


def test_wrong_shape_names_expected_shape(target):
    with pytest.raises(InputContractError, match=r"shape \(5, 16\).*\(N, 1, 4, 4\)"):
        target.logits(torch.rand(5, 16))


@pytest.mark.parametrize("bad,word", [(float("nan"), "non-finite"), (float("inf"), "non-finite")])
def test_nan_and_inf_name_sample_and_position(target, bad, word):
    x = torch.rand(6, 1, 4, 4)
    x[4, 0, 2, 1] = bad
    with pytest.raises(InputContractError, match=rf"input 4 .*{word}.*\(0, 2, 1\)"):
        target.labels(x)


def test_out_of_bounds_names_value_and_bound(target):
    x = torch.rand(6, 1, 4, 4)
    x[2, 0, 0, 3] = 1.7
    with pytest.raises(
        InputContractError, match=r"input 2 has value 1\.7.*above the upper bound 1\.0"
    ):
        target.labels(x)
    x[2, 0, 0, 3] = -0.5
    with pytest.raises(InputContractError, match=r"input 2 has value -0\.5.*below the lower bound"):
        target.labels(x)


@pytest.mark.parametrize(
    "labels,msg",
    [
        ([0, 1, 3], "label 2 is 3, outside the 3 classes"),
        ([0, -1, 1], "label 1 is -1"),
        ([0, 1], "got 2 labels for 3 inputs"),
    ],
)
def test_bad_labels(target, labels, msg):
    with pytest.raises(InputContractError, match=msg):
        registry.create("fgsm", eps=0.1).attack(
            target, torch.rand(3, 1, 4, 4), torch.tensor(labels)
        )


def test_probabilities_where_logits_expected_raise():
    t = TorchTarget(C, model=_net(softmax=True))
    with pytest.raises(
        InputContractError, match="returns probabilities .* where logits are expected"
    ):
        t.logits(torch.rand(8, 1, 4, 4))
    # declared honestly, it works and gradients are those of log-probabilities
    t2 = TorchTarget(C, model=_net(softmax=True), output="probabilities")
    p = t2.probabilities(torch.rand(8, 1, 4, 4))
    assert torch.allclose(p.sum(1), torch.ones(8), atol=1e-5)


def test_wrong_number_of_classes():
    t = TorchTarget(InputContract(shape=(1, 4, 4), n_classes=5), model=_net())
    with pytest.raises(InputContractError, match="declares 5 classes"):
        t.logits(torch.rand(2, 1, 4, 4))


def test_training_mode_warns_and_is_restored():
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    )
    net.train()
    with pytest.warns(AdvkitWarning, match="training mode.*Dropout"):
        t = TorchTarget(C, model=net)
    x = torch.rand(4, 1, 4, 4)
    a, b = t.logits(x), t.logits(x)
    assert torch.equal(a, b)  # evaluated in eval mode: dropout off, deterministic
    assert net.training  # and the user's mode is restored


def test_attack_leaves_model_mode_and_device(target):
    x, y = torch.rand(6, 1, 4, 4), torch.randint(0, 3, (6,))
    registry.create("pgd", eps=0.1, steps=3).attack(target, x, y)
    assert not target.model.training


@pytest.mark.parametrize(
    "est", [LogisticRegression(max_iter=500), LinearSVC(), SGDClassifier(random_state=0)]
)
@pytest.mark.parametrize("k", [2, 3])
def test_sklearn_linear_exact_logits_and_gradients(est, k):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(90, 5))
    y = (x[:, 0] * k).astype(int).clip(0, k - 1)
    est.fit(x, y)
    t = SklearnTarget(InputContract(shape=(5,), n_classes=k), estimator=est)
    assert t.capabilities.gradients
    xt = torch.tensor(x[:10], dtype=torch.float32, requires_grad=True)
    logits = t.logits(xt)
    dec = est.decision_function(x[:10])
    if k == 2:
        assert torch.allclose(
            logits[:, 1] - logits[:, 0], torch.tensor(dec, dtype=torch.float32), atol=1e-4
        )
    else:
        assert torch.allclose(logits, torch.tensor(dec, dtype=torch.float32), atol=1e-4)
    if hasattr(est, "predict_proba"):
        assert torch.allclose(
            t.probabilities(xt),
            torch.tensor(est.predict_proba(x[:10]), dtype=torch.float32),
            atol=1e-5,
        )
    (g,) = torch.autograd.grad(
        logits[:, -1].sum(), xt
    )  # analytic: w_last - w_0 for binary, w_last else
    w = torch.tensor(est.coef_, dtype=torch.float32)
    expect = w[-1] if k > 2 else w[0]
    assert torch.allclose(g, expect.expand(10, 5), atol=1e-5)
    assert np.array_equal(t.labels(xt).numpy(), est.predict(x[:10]))


def test_sklearn_nonlinear_has_no_gradients_and_error_suggests():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(60, 4))
    y = (x[:, 0] > 0.5).astype(int)
    t = SklearnTarget(
        InputContract(shape=(4,), n_classes=2),
        estimator=RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y),
    )
    assert t.capabilities.names() == {"probabilities", "labels"}
    with pytest.raises(IncompatibleTargetError, match="needs gradients"):
        registry.create("pgd", eps=0.1).attack(
            t, torch.tensor(x[:4], dtype=torch.float32), torch.tensor(y[:4])
        )


def test_sklearn_classes_must_be_indices():
    x = np.random.default_rng(0).uniform(size=(20, 3))
    y = np.array([3, 7] * 10)
    with pytest.raises(InputContractError, match="classes_"):
        SklearnTarget(
            InputContract(shape=(3,), n_classes=2), estimator=LogisticRegression().fit(x, y)
        )


def test_numpy_inputs_accepted_at_the_edge(target):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert target.labels(
            np.random.default_rng(0).uniform(size=(3, 1, 4, 4)).astype(np.float32)
        ).shape == (3,)
