"""Tabular feature constraints hold for every attack: per-feature bounds, immutable features,
integer features and one-hot groups (advkit.data.features, advkit.targets.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from advkit import registry
from advkit.data.features import FeatureSpace, build_space
from advkit.errors import InputContractError
from advkit.targets.base import InputContract
from advkit.targets.features import FeatureSpaceTarget
from advkit.targets.torch import TorchTarget

# features: 0 income (wide range), 1 age (immutable, integer), 2 children (integer),
# 3..5 a one-hot group, 6 ratio (immutable)
NAMES = ("income", "age", "children", "site=a", "site=b", "site=c", "ratio")


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 7))
    x[:, 0] = rng.uniform(1_000, 90_000, n)
    x[:, 1] = rng.integers(18, 90, n)
    x[:, 2] = rng.integers(0, 6, n)
    x[np.arange(n), 3 + rng.integers(0, 3, n)] = 1.0
    x[:, 6] = rng.uniform(0.1, 0.9, n)
    return x.astype(np.float32).astype(np.float64)


def _space(x):
    binary = np.array([False, False, False, True, True, True, False])
    return build_space(x[:48], x[48:], NAMES, binary=binary,
                       declared={"immutable": ["age", "ratio"], "integer": ["age", "children"],
                                 "one_hot": [["site=a", "site=b", "site=c"]]}, source="test")


def _target(space):
    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        net[0].weight[:, 0] /= 50_000  # a raw-unit model: income enters on its own scale
    contract = InputContract(shape=(7,), n_classes=3, bounds=(0.0, 90_000.0), features=space)
    return FeatureSpaceTarget(TorchTarget(contract=contract, model=net.eval()))


def _check(space, x_raw, x_adv_raw):
    lo, hi = np.array(space.lo), np.array(space.hi)
    assert (x_adv_raw >= lo - 1e-6 * np.maximum(1, hi - lo)).all()
    assert (x_adv_raw <= hi + 1e-6 * np.maximum(1, hi - lo)).all()
    np.testing.assert_allclose(x_adv_raw[:, [1, 6]], x_raw[:, [1, 6]], rtol=1e-12)  # immutable
    np.testing.assert_allclose(x_adv_raw[:, [1, 2]], np.round(x_adv_raw[:, [1, 2]]), atol=1e-9)
    block = x_adv_raw[:, 3:6]
    assert np.isin(block, (0.0, 1.0)).all() and (block.sum(1) == 1).all()


PARAMS = {"pgd": {"eps": 0.37, "steps": 10}, "bim": {"eps": 0.37, "steps": 10},
          "fgsm": {"eps": 0.37}, "mifgsm": {"eps": 0.37, "steps": 10},
          "apgd": {"eps": 0.37, "steps": 10}, "apgd-t": {"eps": 0.37, "steps": 10},
          "cw-linf": {"eps": 0.37, "max_iter": 10}, "square": {"eps": 0.37, "n_queries": 50},
          "cw-l2": {"max_iter": 20, "binary_search_steps": 2}, "deepfool": {"max_iter": 10},
          "jsma": {}, "pgd-l2": {"eps": 1.5, "norm": "l2", "steps": 10},
          "hopskipjump": {"max_queries": 100}, "boundary": {"max_queries": 100},
          "simba": {"max_queries": 100}, "zoo": {"max_queries": 100},
          "sign-opt": {"max_queries": 100}}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_every_attack_keeps_immutable_integer_one_hot_and_bounds(name):
    x = _data()
    space = _space(x)
    target = _target(space)
    z = target.to_unit(torch.from_numpy(x))
    params = dict(PARAMS[name])
    attack = registry.create("pgd" if name == "pgd-l2" else name, **params)
    y = target.labels(z)
    res = attack.attack(target, z, (y + 1) % 3 if name == "jsma" else y,
                        generator=torch.Generator().manual_seed(1))
    x_adv = space.from_unit(res.x_adv).numpy()  # the result itself, not the model's repair of it
    _check(space, x, x_adv)
    # the prediction reported is the model's answer to the projected point
    assert torch.equal(res.adv_pred, target.inner.labels(torch.from_numpy(x_adv).float()))
    if name in ("pgd", "apgd", "square"):  # the attack did move the mutable features
        assert (np.abs(x_adv[:, 0] - x[:, 0]) > 0).any()


def test_every_registered_evasion_attack_on_flat_data_is_covered():
    tabular = {n for n in registry.list("evasion") if n not in ("patch", "universal")}
    assert tabular <= set(PARAMS), "add the new attack to PARAMS so its constraints are tested"


def test_one_hot_and_integer_moves_stay_inside_the_ball():
    x = _data()
    space = _space(x)
    from advkit.threats import LpBall

    z0 = space.to_unit(torch.from_numpy(x))
    z = z0.clone()
    site = z0[:, 3:6].argmax(1)
    rows = torch.arange(len(z))
    z[rows, 3 + site] -= 0.5  # within L2 eps 1 before the repair; the repair's argmax then
    z[rows, 3 + (site + 1) % 3] += 0.55  # flips the category, which costs sqrt(2) > 1
    z[:, 2] = (z[:, 2] + 0.15).clamp(max=1)  # children: span 5, +0.75 raw rounds to +1
    ball = LpBall(norm="l2", eps=1.0)
    assert (ball.distance(z, z0) <= 1.0).all()
    p = space.project(z, z0, ball)
    assert (ball.distance(p, z0) <= 1.0 + 1e-9).all()
    raw = space.from_unit(p).numpy()
    np.testing.assert_allclose(raw[:, 3:6], x[:, 3:6])  # reverted, not left half-flipped
    np.testing.assert_allclose(raw[:, 2], x[:, 2], atol=1e-9)  # truncated toward the input
    # inside the ball the repair stands: L∞ eps 0.2 lets children move by one
    p = space.project(z0 + torch.tensor([0, 0, 0.15, 0, 0, 0, 0]).double(), z0,
                      LpBall(norm="inf", eps=0.2))
    moved = space.from_unit(p).numpy()[:, 2] - x[:, 2]
    assert set(np.round(moved, 9)) <= {0.0, 1.0} and (moved == 1).any()


def test_data_that_break_declared_constraints_are_typed_errors():
    x = _data()
    binary = np.array([False, False, False, True, True, True, False])
    bad = x.copy()
    bad[0, 2] = 2.5
    with pytest.raises(InputContractError, match="declared integer"):
        build_space(bad, bad[:4], NAMES, binary=binary, declared={"integer": ["children"]},
                    source="t")
    bad = x.copy()
    bad[3, 3:6] = 1
    with pytest.raises(InputContractError, match="not one-hot"):
        build_space(bad, bad[:4], NAMES, binary=binary,
                    declared={"one_hot": [["site=a", "site=b", "site=c"]]}, source="t")
    with pytest.raises(InputContractError, match="no feature named 'agee'"):
        build_space(x, x[:4], NAMES, binary=binary, declared={"immutable": ["agee"]}, source="t")
    with pytest.raises(InputContractError, match="outside its bounds"):
        build_space(x, x[:4], NAMES, binary=binary, declared={"bounds": {"income": [0, 10]}},
                    source="t")
    with pytest.raises(InputContractError, match="unknown key"):
        build_space(x, x[:4], NAMES, binary=binary, declared={"imutable": ["age"]}, source="t")


def test_unit_space_round_trip_is_exact_in_float32():
    x = _data()
    space = _space(x)
    target = _target(space)
    z = target.to_unit(torch.from_numpy(x).float())
    assert z.dtype == torch.float64 and float(z.min()) >= 0 and float(z.max()) <= 1
    assert torch.equal(target.to_raw(z), torch.from_numpy(x).float())


def test_constant_feature_cannot_move():
    space = FeatureSpace(("a", "b"), (0.0, 5.0), (1.0, 5.0))
    z = torch.tensor([[0.5, 0.0], [0.2, 1.0]], dtype=torch.float64)
    assert torch.equal(space.from_unit(z)[:, 1], torch.tensor([5.0, 5.0], dtype=torch.float64))
