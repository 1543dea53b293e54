"""JSMA: the L0 budget, the pair choice, reaching the target, conformance."""

import itertools
import math

import pytest
import torch

from advkit import registry
from advkit.attacks.evasion.jsma import _best_pairs
from advkit.errors import InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import check_evasion_attack, toy_image_target, toy_linear_target


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=0, n=16)


def test_targeted_reaches_target_within_l0_budget(toy):
    target, x, y = toy
    goal = Targeted((y + 1) % 4)
    gamma = 0.2
    res = registry.create("jsma", gamma=gamma).attack(target, x, y, goal=goal)
    changed = (res.x_adv != x).flatten(1).sum(1)
    d = x[0].numel()
    assert (changed <= gamma * d).all()
    assert res.norm == 0.0
    torch.testing.assert_close(res.distance, changed.float())
    assert res.success.float().mean() >= 0.8
    assert torch.equal(res.adv_pred[res.success], ((y + 1) % 4)[res.success])
    # theta = +1: selected features only increase, all the way to the upper bound
    moved = res.x_adv != x
    assert (res.x_adv[moved] == 1.0).all()


def test_negative_theta_decreases_features(toy):
    target, x, y = toy
    res = registry.create("jsma", theta=-0.5, gamma=0.3).attack(target, x, y)
    moved = res.x_adv != x
    assert moved.any()
    assert (res.x_adv[moved] < x[moved]).all()
    expected = (x - 0.5).clamp(0, 1)
    assert torch.equal(res.x_adv[moved], expected[moved])


def test_untargeted_aims_at_most_likely_wrong_class(toy):
    target, x, y = toy
    res = registry.create("jsma", gamma=0.3).attack(target, x, y)
    logits = target.logits(x).scatter(1, y[:, None], -math.inf)
    assert torch.equal(res.extra["targets"], logits.argmax(1))
    assert res.success.float().mean() >= 0.8


def test_best_pair_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    m, d = 5, 7
    a, b = torch.randn(m, d, generator=g), torch.randn(m, d, generator=g)
    dom = torch.rand(m, d, generator=g) > 0.2
    for sign in (1.0, -1.0):
        p, q, ok = _best_pairs(a, b, dom, sign)
        for i in range(m):
            best, arg = -math.inf, None
            for s, t in itertools.permutations(range(d), 2):
                al, be = a[i, s] + a[i, t], b[i, s] + b[i, t]
                if dom[i, s] and dom[i, t] and sign * al > 0 and sign * be < 0 and -al * be > best:
                    best, arg = float(-al * be), {s, t}
            assert bool(ok[i]) == (arg is not None)
            if arg is not None:
                assert {int(p[i]), int(q[i])} == arg


def test_small_budget_changes_nothing_on_tabular():
    # gamma * d < 2 leaves no room for a single pair: the input comes back unchanged
    target, x, y = toy_linear_target(seed=0, n=8)
    res = registry.create("jsma", gamma=0.1).attack(target, x, y)
    assert torch.equal(res.x_adv, x) and (res.distance == 0).all()


@pytest.mark.parametrize("bad", [{"theta": 0.0}, {"theta": 1.5}, {"gamma": 0.0}, {"gamma": 1.2}])
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        registry.create("jsma", **bad)


def test_conformance_with_a_budget_that_moves(toy):
    target, x, y = toy
    check_evasion_attack("jsma", target, x, y, params={"gamma": 0.3})
