"""Transfer attacks (Papernot 2016/2017): substitute training and surrogate crafting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit.attacks.evasion.substitute import SubstituteTraining
from advkit.attacks.evasion.transfer import BLACK_BOX_TRANSFER, TransferAttack
from advkit.errors import (
    BudgetExhausted,
    IncompatibleTargetError,
    InputContractError,
    InvalidParameterError,
)
from advkit.evaluation.metrics import proportion
from advkit.evaluation.transferability import fit_family
from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget

CONTRACT = InputContract(shape=(30,), n_classes=2)


@pytest.fixture(scope="module")
def cancer():
    """breast_cancer min-max scaled to [0, 1] (fitted on the 400 training rows), shuffled."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import MinMaxScaler

    x, y = load_breast_cancer(return_X_y=True)
    p = np.random.default_rng(0).permutation(len(x))
    x, y = x[p], y[p]
    x = np.clip(MinMaxScaler().fit(x[:400]).transform(x), 0, 1).astype(np.float32)
    return x[:400], y[:400], torch.from_numpy(x[400:]), torch.from_numpy(y[400:]).long()


@pytest.fixture(scope="module")
def tree(cancer):
    from sklearn.tree import DecisionTreeClassifier

    xtr, ytr, _, _ = cancer
    est = DecisionTreeClassifier(max_depth=4, random_state=0).fit(xtr, ytr)
    return SklearnTarget(contract=CONTRACT, estimator=est)


def test_substitute_spends_exactly_the_queries_it_reports(cancer, tree):
    xtr = cancer[0]
    tree.reset_queries()
    sub = SubstituteTraining(rounds=3, epochs=5).fit(
        tree, torch.from_numpy(xtr[:20]), generator=torch.Generator().manual_seed(0))
    assert sub.queries == tree.queries == 20 * 2**3  # the set doubles each round, no re-asks
    assert sub.x.shape == (160, 30) and sub.y.shape == (160,)
    assert float(sub.x.min()) >= 0 and float(sub.x.max()) <= 1  # augmentation stays in bounds
    with torch.no_grad():
        assert torch.equal(sub.y, tree.labels(sub.x))  # the labels are the victim's own


def test_substitute_agrees_with_the_victim_well_above_chance(cancer, tree):
    # measured on held-out points: 0.817 (this seed), 0.888 / 0.929 / 0.899 (other seeds);
    # the majority class is 0.615 of the held-out points
    xtr, _, xte, yte = cancer
    sub = SubstituteTraining(rounds=3, epochs=20).fit(
        tree, torch.from_numpy(xtr[:20]), generator=torch.Generator().manual_seed(0))
    majority = max(float(yte.float().mean()), 1 - float(yte.float().mean()))
    agree = sub.agreement(tree, xte)
    assert agree >= 0.75 > majority + 0.1


def test_substitute_respects_the_victim_budget(cancer):
    from sklearn.tree import DecisionTreeClassifier

    xtr, ytr, _, _ = cancer
    victim = SklearnTarget(contract=CONTRACT, budget=100,
                           estimator=DecisionTreeClassifier(max_depth=3).fit(xtr, ytr))
    with pytest.raises(BudgetExhausted):  # 20 * 2**3 = 160 labels needed, 100 allowed
        SubstituteTraining(rounds=3, epochs=2).fit(victim, torch.from_numpy(xtr[:20]))
    assert victim.queries <= 100


def test_mlp_examples_fool_logistic_regression_more_than_random_noise(cancer):
    # measured (3 MLP seeds) at eps 0.15: transfer 0.574-0.648, sign noise 0.043-0.056
    xtr, ytr, xte, yte = cancer
    mlp = fit_family("nn", xtr, ytr, CONTRACT, seed=0, epochs=30)
    lr = fit_family("logreg", xtr, ytr, CONTRACT)
    eps = 0.15
    lr.reset_queries()
    res = TransferAttack(eps=eps, steps=10).run(mlp, lr, xte, yte,
                                                generator=torch.Generator().manual_seed(0))
    assert res.victim_queries == lr.queries == 2 * len(xte)  # clean + adversarial labels
    assert float((res.surrogate.x_adv - xte).abs().max()) <= eps + 1e-6
    g = torch.Generator().manual_seed(1)
    noise = (xte + eps * (torch.randint(0, 2, xte.shape, generator=g) * 2 - 1)).clamp(0, 1)
    with torch.no_grad():
        noise_rate = proportion(lr.labels(noise) != yte, within=res.within)
    rate = res.success_rate()
    assert rate.n == noise_rate.n > 100
    assert rate.lo > noise_rate.hi  # intervals apart, not just point estimates


def test_transfer_threat_tag_is_black_box_transfer():
    assert BLACK_BOX_TRANSFER.atlas_id == "AML.T0043.002"
    assert TransferAttack.threat_tag is BLACK_BOX_TRANSFER


@pytest.mark.parametrize("kw", [{"eps": -0.1}, {"attack": "square"}, {"steps": 0},
                                {"eps": "0.1"}, {"norm": 3}])
def test_transfer_bad_params_raise_typed_errors(kw):
    with pytest.raises(InvalidParameterError):
        TransferAttack(**kw)


@pytest.mark.parametrize("kw", [{"rounds": -1}, {"lam": 0.0}, {"hidden": ()},
                                {"hidden": (0,)}, {"epochs": 0}, {"lr": -1.0}])
def test_substitute_bad_params_raise_typed_errors(kw):
    with pytest.raises(InvalidParameterError):
        SubstituteTraining(**kw)


def test_bad_inputs_raise_typed_errors(cancer, tree):
    xtr, _, xte, yte = cancer
    with pytest.raises(InputContractError, match="advkit Target"):
        SubstituteTraining().fit(object(), torch.from_numpy(xtr[:20]))
    with pytest.raises(InputContractError, match="at least 2 seed"):
        SubstituteTraining().fit(tree, torch.from_numpy(xtr[:1]))
    with pytest.raises(InputContractError):  # outside the contract's [0, 1]
        SubstituteTraining().fit(tree, torch.from_numpy(xtr[:20]) + 5)
    with pytest.raises(IncompatibleTargetError):  # a tree has no gradients to craft on
        TransferAttack().craft(tree, xte, yte)
    with pytest.raises(InputContractError, match="advkit Target"):
        TransferAttack().run(object(), tree, xte, yte)
