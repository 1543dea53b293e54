"""Carlini & Wagner L2 and L∞: norms no larger than PGD-minimal ones, targets, oracles."""

import math

import pytest
import torch

from advkit import registry
from advkit.errors import InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import check_evasion_attack, toy_image_target, toy_linear_target

FAST_CW = {"binary_search_steps": 5, "max_iter": 100}


def pgd_minimal_l2(target, x, y, *, hi: float, bisections: int = 10, steps: int = 20):
    """Per point, the smallest L2 eps (upper end of the bracket) at which PGD-L2 succeeds."""
    out = []
    for i in range(x.shape[0]):
        lo_e, hi_e = 0.0, hi
        for _ in range(bisections):
            mid = (lo_e + hi_e) / 2
            pgd = registry.create("pgd", eps=mid, norm=2, steps=steps, random_start=False)
            if bool(pgd.attack(target, x[i : i + 1], y[i : i + 1]).success[0]):
                hi_e = mid
            else:
                lo_e = mid
        out.append(hi_e)
    return torch.tensor(out)


def _check_not_larger(res, pgd_min):
    # tolerance: 1 % per point (the optimiser's finite iterations); medians without tolerance
    assert res.success.all()
    assert (res.distance <= pgd_min * 1.01).all(), (res.distance / pgd_min).tolist()
    assert res.distance.median() <= pgd_min.median()


def test_cw_l2_norms_no_larger_than_pgd_minimal_linear():
    target, x, y = toy_linear_target(seed=0, n=8)
    pgd_min = pgd_minimal_l2(target, x, y, hi=2.0)
    _check_not_larger(registry.create("cw-l2", **FAST_CW).attack(target, x, y), pgd_min)


@pytest.mark.slow
def test_cw_l2_norms_no_larger_than_pgd_minimal_cnn_defaults():
    target, x, y = toy_image_target(seed=0, n=12)
    pgd_min = pgd_minimal_l2(target, x, y, hi=4.0)
    _check_not_larger(registry.create("cw-l2").attack(target, x, y), pgd_min)


def test_cw_l2_targeted_reaches_target_with_confidence():
    target, x, y = toy_image_target(seed=0, n=8)
    t = (y + 1) % 4
    kappa = 1.0
    res = registry.create("cw-l2", kappa=kappa, **FAST_CW).attack(target, x, y, goal=Targeted(t))
    assert res.success.all()
    logits = target.logits(res.x_adv)
    own = logits.gather(1, t[:, None]).squeeze(1)
    other = logits.scatter(1, t[:, None], -math.inf).amax(1)
    assert (own - other >= kappa - 1e-4).all()
    assert res.extra["found"].all()


def test_cw_l2_failure_returns_the_input():
    target, x, y = toy_image_target(seed=0, n=8)
    correct = target.labels(x) == y
    res = registry.create("cw-l2", binary_search_steps=1, max_iter=2, initial_const=1e-6).attack(
        target, x[correct], y[correct])
    assert not res.success.any()
    assert torch.equal(res.x_adv, x[correct]) and (res.distance == 0).all()


def test_cw_l2_more_search_steps_never_hurt():
    # the per-sample best is kept over binary-search steps: more steps can only lower the norm
    target, x, y = toy_linear_target(seed=3, n=8)
    kw = {"max_iter": 50, "initial_const": 0.1}
    short = registry.create("cw-l2", binary_search_steps=2, **kw).attack(target, x, y)
    long = registry.create("cw-l2", binary_search_steps=5, **kw).attack(target, x, y)
    both = short.success & long.success
    assert both.float().mean() >= 0.5
    assert (long.distance[both] < short.distance[both] - 1e-3).any()  # the extra steps did work
    assert (long.distance[both] <= short.distance[both] + 1e-6).all()


def _linf_oracle(target, x, y, eps):
    """Linear model: some class k beats y somewhere in the eps-box iff its best corner does."""
    w, b = target._w, target._b
    a, bb = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    diff = w[None] - w[y][:, None]  # (n, K, d): gradient of f_k - f_y
    corner = torch.where(diff > 0, bb[:, None], a[:, None])
    gain = (corner * diff).sum(2) + (b[None] - b[y][:, None])
    return gain.scatter(1, y[:, None], -math.inf).amax(1)


def test_cw_linf_finds_an_example_exactly_when_one_exists():
    target, x, y = toy_linear_target(seed=0, n=24)
    eps = 0.12
    best = _linf_oracle(target, x, y, eps)
    clear = best.abs() > 1e-2  # leave out points whose best corner sits on the boundary
    assert (best[clear] > 0).any() and (best[clear] < 0).any()
    res = registry.create("cw-linf", eps=eps).attack(target, x, y)
    assert torch.equal(res.success[clear], best[clear] > 0)
    assert (res.distance <= eps + 1e-6).all()


def test_cw_linf_targeted():
    target, x, y = toy_image_target(seed=0, n=8)
    t = (y + 1) % 4
    res = registry.create("cw-linf", eps=0.4).attack(target, x, y, goal=Targeted(t))
    assert res.success.float().mean() >= 0.75
    assert torch.equal(res.adv_pred[res.success], t[res.success])


@pytest.mark.parametrize("bad", [{"kappa": -1.0}, {"learning_rate": 0.0},
                                 {"binary_search_steps": 0}, {"initial_const": 0.0},
                                 {"abort_early": "yes"}, {"max_iter": 0}])
def test_cw_l2_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        registry.create("cw-l2", **bad)


def test_conformance_cw_l2_small_params():
    target, x, y = toy_image_target(seed=0, n=24)
    check_evasion_attack("cw-l2", target, x, y, params={"binary_search_steps": 3, "max_iter": 50})
