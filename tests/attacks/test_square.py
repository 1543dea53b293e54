"""Square Attack (Andriushchenko 2020): success, query accounting, schedule, black-box use."""

import math

import pytest
import torch

from advkit.attacks.evasion.pgd import PGD
from advkit.attacks.evasion.square import (
    Square,
    margin_loss,
    meta_pattern,
    ring_pattern,
    square_fraction,
)
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import toy_image_target, toy_linear_target


@pytest.fixture(scope="module")
def image():
    return toy_image_target(seed=0, n=32)


@pytest.fixture(scope="module")
def forest():
    from sklearn.ensemble import RandomForestClassifier

    from advkit.targets.sklearn import SklearnTarget

    lin, x, y = toy_linear_target(seed=0, n=232)
    rf = RandomForestClassifier(n_estimators=10, random_state=0)
    rf.fit(x[:200].numpy(), y[:200].numpy())
    return SklearnTarget(lin.contract, estimator=rf), x[200:], y[200:]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_square_fraction_follows_the_halving_schedule():
    assert square_fraction(0.8, 0, 10000) == 0.8
    assert square_fraction(0.8, 10, 10000) == 0.8  # halved only after iteration 10
    assert square_fraction(0.8, 11, 10000) == 0.4
    assert square_fraction(0.8, 9999, 10000) == pytest.approx(0.8 / 2**9)
    # rescaled linearly: iteration 100 of 1000 is iteration 1000 of 10,000
    assert square_fraction(0.8, 100, 1000) == square_fraction(0.8, 1000, 10000)
    ps = [square_fraction(0.8, i, 1000) for i in range(1000)]
    assert all(b <= a for a, b in zip(ps, ps[1:], strict=False))


def test_margin_is_negative_exactly_when_the_goal_is_met():
    g = _gen(1)
    scores = torch.randn(200, 5, generator=g)
    y = torch.randint(0, 5, (200,), generator=g)
    assert torch.equal(margin_loss(scores, y, False) < 0, scores.argmax(1) != y)
    assert torch.equal(margin_loss(scores, y, True) < 0, scores.argmax(1) == y)


def test_square_fools_the_toy_cnn_like_white_box_pgd(image):
    target, x, y = image
    res = Square(eps=0.3, n_queries=500).attack(target, x, y, generator=_gen())
    pgd = PGD(eps=0.3).attack(target, x, y, generator=_gen())
    assert res.clean_accuracy().value == 1.0
    assert res.success_rate().value >= 0.8
    # black-box random search may trail white-box PGD, but not by much on this unmasked model
    assert res.robust_accuracy().value <= pgd.robust_accuracy().value + 0.2
    # every coordinate of an L∞ Square perturbation sits at a vertex: x ± eps, clipped
    lo_v, hi_v = (x - 0.3).clamp(0, 1), (x + 0.3).clamp(0, 1)
    at_vertex = (torch.isclose(res.x_adv, lo_v, atol=1e-6)
                 | torch.isclose(res.x_adv, hi_v, atol=1e-6))
    assert at_vertex.all()


def test_queries_match_the_target_counter_and_never_exceed_the_budget(image):
    target, x, y = image
    n_queries = 40
    q0 = target.queries
    res = Square(eps=0.3, n_queries=n_queries).attack(target, x, y, generator=_gen())
    per_point = res.extra["queries"]
    assert res.queries == target.queries - q0
    assert res.queries == int(per_point.sum()) + x.shape[0]  # + the template's scoring pass
    assert int(per_point.max()) <= n_queries
    # points the attack did not fool used the whole budget; fooled ones stopped early
    assert torch.all(per_point[~res.success] == n_queries)
    assert res.success.any() and (per_point[res.success] < n_queries).any()
    assert not res.success.all()  # this budget leaves some points unfooled (both branches run)


def test_per_sample_early_stop_queries_only_unfooled_points(image):
    target, x, y = image
    y_wrong = (y + 1) % 4  # every point is "misclassified" before the attack
    res = Square(eps=0.3, n_queries=100).attack(target, x, y_wrong, generator=_gen())
    assert torch.all(res.extra["queries"] == 1)  # the clean pass only
    assert torch.equal(res.x_adv, x)
    trace = res.extra["success_by_query"]
    assert trace.shape == (100,) and torch.all(trace == 1)


def test_targeted_square_reaches_the_target_class(image):
    target, x, y = image
    res = Square(eps=0.3, n_queries=500).attack(target, x, y, goal=Targeted(2), generator=_gen())
    assert res.success_rate().value >= 0.5
    assert torch.all(res.adv_pred[res.success] == 2)


def test_square_attacks_a_random_forest_without_gradients(forest):
    target, x, y = forest
    assert not target.capabilities.gradients
    with pytest.raises(IncompatibleTargetError):  # PGD needs gradients; Square does not
        PGD(eps=0.2).attack(target, x, y)
    res = Square(eps=0.2, n_queries=150).attack(target, x, y, generator=_gen())
    assert res.clean_accuracy().value >= 0.9
    assert res.success_rate().value >= 0.5
    assert int(res.extra["queries"].max()) <= 150
    assert float((res.x_adv - x).abs().max()) <= 0.2 + 1e-6


def test_same_seed_same_output_and_success_trace_is_monotone(image):
    target, x, y = image
    a = Square(eps=0.3, n_queries=200).attack(target, x, y, generator=_gen(7))
    b = Square(eps=0.3, n_queries=200).attack(target, x, y, generator=_gen(7))
    assert torch.equal(a.x_adv, b.x_adv)
    trace = a.extra["success_by_query"]
    assert torch.all(trace[1:] >= trace[:-1])
    assert trace[-1].item() == pytest.approx(a.success.float().mean().item())


def test_l2_patterns_follow_the_paper():
    eta = ring_pattern(5, 5)
    assert eta[2, 2] == eta.max() and eta[0, 0] == eta.min()  # weights grow toward the centre
    assert torch.equal(eta, eta.T) and torch.equal(eta, eta.flip(0))
    meta = meta_pattern(6, 6)
    assert meta.norm().item() == pytest.approx(1.0)
    assert meta.sum().item() == pytest.approx(0.0, abs=1e-6)  # two halves of opposite sign
    assert (meta[:3] > 0).all() and (meta[3:] < 0).all()
    assert meta_pattern(1, 6).shape == (1, 6)


def test_l2_update_moves_mass_between_two_windows_and_keeps_norm_eps():
    att = Square(eps=2.0, norm=2)
    g = _gen(4)
    x0 = 0.5 + 0.1 * torch.rand(6, 3, 10, 10, generator=g)
    lo, hi = -10.0, 10.0  # no clipping: the update must conserve the norm exactly
    b = att._init(x0, lo, hi, g)
    assert torch.allclose((b - x0).flatten(1).norm(dim=1), torch.full((6,), 2.0), atol=1e-5)
    for p in (0.5, 0.1):
        cand = att._propose(x0, b, p, lo, hi, g)
        assert torch.allclose((cand - x0).flatten(1).norm(dim=1), torch.full((6,), 2.0), atol=1e-5)
        side = round((p * 100) ** 0.5)
        changed = (cand != b).any(1).flatten(1).sum(1)  # pixels touched: within two windows
        assert (changed <= 2 * side * side).all() and (changed > 0).all()
        b = cand


def test_l2_square_fools_the_toy_cnn(image):
    target, x, y = image
    res = Square(eps=2.0, norm=2, n_queries=500).attack(target, x, y, generator=_gen())
    pgd = PGD(eps=2.0, norm=2).attack(target, x, y, generator=_gen())
    assert res.success_rate().value >= 0.7
    assert res.robust_accuracy().value <= pgd.robust_accuracy().value + 0.2
    assert (res.distance <= 2.0 + 1e-5).all()


@pytest.mark.parametrize("bad", [dict(norm=1), dict(norm="l3"), dict(n_queries=1),
                                 dict(p_init=0.0), dict(p_init=1.5), dict(eps=-0.1),
                                 dict(eps=math.nan)])
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        Square(**bad)


def test_a_query_budget_that_runs_out_keeps_the_best_result_and_says_so():
    """Issue 12 item 8: the attack stops at the budget with what it found; the result is scored
    (scoring is not the attacker's query) and marked."""
    from advkit import registry
    from advkit.targets.base import InputContract
    from advkit.targets.torch import TorchTarget

    g = torch.Generator().manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.rand(20, 1, 8, 8, generator=g)
    free = TorchTarget(contract=InputContract(shape=(1, 8, 8), n_classes=10), model=net)
    y = free.labels(x)
    attack = registry.create("square", eps=0.3, n_queries=200)
    full = attack.attack(free, x, y, generator=torch.Generator().manual_seed(1))
    assert "budget_exhausted" not in full.extra
    capped = TorchTarget(contract=InputContract(shape=(1, 8, 8), n_classes=10), model=net,
                         budget=20 + 5 * 20)
    res = attack.attack(capped, x, y, generator=torch.Generator().manual_seed(1))
    assert "query budget of 120 exhausted" in res.extra["budget_exhausted"]
    assert res.queries - x.shape[0] <= 120  # the attacker's queries (scoring the result aside)
    assert int(res.extra["queries"].max()) < 200
    # what it found within the budget is kept and scored on the model
    assert torch.equal(res.adv_pred, free.labels(res.x_adv))
    assert res.success.sum() > 0 and res.success.sum() <= full.success.sum()
    # an attack with nothing to keep returns the inputs, marked
    pgd = registry.create("pgd", eps=0.3, steps=50).attack(
        TorchTarget(contract=InputContract(shape=(1, 8, 8), n_classes=10), model=net, budget=100),
        x, y)
    assert "budget_exhausted" in pgd.extra and torch.equal(pgd.x_adv, x)
