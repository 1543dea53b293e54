"""Copycat (Correia-Silva et al. 2018) with random, natural and adaptive (Knockoff) queries."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from advkit.attacks.privacy.copycat import Copycat
from advkit.data import load
from advkit.errors import InputContractError, InvalidParameterError
from advkit.evaluation.fidelity import evaluate_extraction, fidelity, fidelity_curve
from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget
from advkit.targets.torch import TorchTarget

SMALL = dict(architecture="mlp", hidden=(32,), epochs=5, min_steps=150, batch_size=32, lr=1e-2)


@pytest.fixture(scope="module")
def digits():
    ds = load("digits")
    xtr = ds.x_train.reshape(len(ds.x_train), -1)
    xte = ds.x_test.reshape(len(ds.x_test), -1)
    clf = LogisticRegression(max_iter=2000).fit(xtr.numpy(), ds.y_train.numpy())
    target = SklearnTarget(InputContract(shape=(64,), n_classes=10), estimator=clf)
    return target, xtr, ds.y_train, xte, ds.y_test


def test_natural_queries_labels_only(digits):
    target, xtr, _, xte, yte = digits
    from advkit.defenses.output import LabelsOnly

    hard = target.with_output(LabelsOnly())
    res = Copycat(queries=400, strategy="natural", **SMALL).steal(
        hard, pool=xtr, generator=torch.Generator().manual_seed(0))
    assert res.queries == 400 and hard.queries == 400 and res.x.shape == (400, 64)
    assert isinstance(res.model, torch.nn.Module)
    rep = evaluate_extraction(target, res.model, xte, yte, queries=res.queries,
                              generator=torch.Generator().manual_seed(1))
    assert rep.test.value >= 0.85 and rep.accuracy.value >= 0.8, rep.to_dict()
    # the stolen model is a transfer surrogate: it wraps as a white-box target
    surrogate = TorchTarget(target.contract, model=res.model)
    assert surrogate.capabilities.gradients


def test_random_queries_and_same_seed_same_model(digits):
    target, _, _, xte, _ = digits
    a = Copycat(queries=200, **SMALL).steal(target, generator=torch.Generator().manual_seed(3))
    b = Copycat(queries=200, **SMALL).steal(target, generator=torch.Generator().manual_seed(3))
    assert a.queries == 200 and bool((a.x >= 0).all() and (a.x <= 1).all())
    with torch.no_grad():
        assert torch.equal(a.model(xte), b.model(xte))
    assert 0.0 <= fidelity(target, a.model, xte).value <= 1.0


def test_adaptive_knockoff_bandit(digits):
    target, xtr, ytr, xte, _ = digits
    atk = Copycat(queries=300, strategy="adaptive", rounds=5, round_epochs=1, **SMALL)
    res = atk.steal(target, pool=xtr, generator=torch.Generator().manual_seed(0))
    assert res.queries == 300 and sum(res.action_counts) == 300 and len(res.rewards) == 5
    assert abs(sum(res.policy) - 1) < 1e-9 and len(res.policy) == 10  # k-means actions
    assert len({tuple(r.tolist()) for r in res.x}) == 300  # no point queried twice
    assert fidelity(target, res.model, xte).value >= 0.75
    small = Copycat(queries=40, strategy="adaptive", rounds=2, round_epochs=1,
                    **{**SMALL, "min_steps": 5, "epochs": 1})
    res = small.steal(target, pool=xtr, pool_groups=ytr.numpy() % 3,
                      generator=torch.Generator().manual_seed(0))
    assert len(res.policy) == 3 and sum(res.action_counts) == 40


def test_fidelity_curve(digits):
    target, xtr, _, xte, yte = digits

    def steal(n):
        r = Copycat(queries=n, strategy="natural", **SMALL).steal(
            target, pool=xtr, generator=torch.Generator().manual_seed(0))
        return r.model, r.queries

    pts = fidelity_curve(steal, [50, 400], target, xte, yte, n_uniform=200,
                         generator=torch.Generator().manual_seed(0))
    assert [p.report.queries for p in pts] == [50, 400]
    assert pts[1].report.test.value > pts[0].report.test.value
    d = pts[1].to_dict()
    assert d["budget"] == 400 and 0 <= d["fidelity_test"]["value"] <= 1


def test_errors(digits):
    target, xtr, _, _, _ = digits
    with pytest.raises(InvalidParameterError, match="pool"):
        Copycat(strategy="natural", **SMALL).steal(target)
    with pytest.raises(InputContractError, match="reshape"):
        Copycat(strategy="natural", **SMALL).steal(target, pool=xtr.reshape(-1, 8, 8))
    with pytest.raises(InvalidParameterError, match="at most the pool"):
        Copycat(queries=10_000, strategy="natural", **SMALL).steal(target, pool=xtr)
    with pytest.raises(InputContractError, match="bounds"):
        Copycat(queries=10, strategy="natural", **SMALL).steal(target, pool=xtr * 3)
    with pytest.raises(InvalidParameterError, match="hidden"):
        Copycat(architecture="lenet", hidden=(3,))
    with pytest.raises(InvalidParameterError, match="strategy"):
        Copycat(strategy="smart")
    assert target.queries >= 0 and np.isfinite(target.queries)


def test_a_natural_budget_above_the_training_inputs_is_refused_with_both_ways_out():
    from advkit.audit.families.extraction import check_query_pool
    from advkit.errors import AuditSpecError

    check_query_pool("extraction", "x", {"strategy": "natural"}, 400, 400)  # exactly the pool
    check_query_pool("extraction", "x", {"strategy": "random"}, 10**6, 400)  # drawn, not taken
    with pytest.raises(AuditSpecError, match=r"extraction: x: the adaptive strategy .* 400 "
                       r"training inputs; lower the queries to at most 400 or use strategy random"):
        check_query_pool("extraction", "x", {"strategy": "adaptive"}, 401, 400)
