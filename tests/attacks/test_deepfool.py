"""DeepFool: exact distances on linear models, early stop, targeted extension, conformance."""

import math

import pytest
import torch

from advkit import registry
from advkit.errors import InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import check_evasion_attack, toy_image_target, toy_linear_target

DUAL = {2.0: 2.0, math.inf: 1.0, 1.0: math.inf}


def closed_form(target, x, y, p):
    """min over k != y of |f_k - f_y| / ||w_k - w_y||_q for the linear model inside ``target``."""
    w, b = target._w, target._b
    z = x @ w.T + b
    diff = w[None] - w[y][:, None]  # (n, K, d)
    dist = (z - z.gather(1, y[:, None])).abs() / diff.norm(p=DUAL[p], dim=2)
    return dist.scatter(1, y[:, None], math.inf).min(1).values


@pytest.mark.parametrize("norm", [2.0, math.inf, 1.0])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_linear_model_exact_distance(norm, n_classes):
    # A linear classifier is its own linearisation: one DeepFool step lands (1 + overshoot) times
    # the exact distance to the closest class boundary (plus the reference implementation's 1e-4)
    # away, along the dual-norm steepest direction.
    target, x, y = toy_linear_target(seed=1, n_classes=n_classes, n=24)
    correct = target.labels(x) == y
    x, y = x[correct], y[correct]
    res = registry.create("deepfool", norm=norm).attack(target, x, y)
    expected = 1.02 * (closed_form(target, x, y, norm) + 1e-4)
    inside = (res.x_adv > 0) & (res.x_adv < 1)  # points whose step was not clipped by the bounds
    unclipped = inside.all(1) if norm != 1.0 else torch.ones_like(res.success)
    assert unclipped.float().mean() >= 0.75
    assert res.success.all()
    torch.testing.assert_close(res.distance[unclipped], expected[unclipped], rtol=1e-4, atol=1e-6)
    assert (res.extra["iterations"] == 1).all()


def test_already_misclassified_points_stay_put():
    target, x, y = toy_linear_target(seed=1, n_classes=3, n=24)
    wrong = (target.labels(x) + 1) % 3  # labels that the model does not predict
    res = registry.create("deepfool").attack(target, x, wrong)
    assert torch.equal(res.x_adv, x)
    assert (res.distance == 0).all() and res.success.all()


def test_image_cnn_batched_equals_per_sample_and_counts():
    target, x, y = toy_image_target(seed=0, n=12)
    attack = registry.create("deepfool")
    res = attack.attack(target, x, y)
    assert res.success.all()
    one = torch.stack([attack.attack(target, x[i : i + 1], y[i : i + 1]).distance[0]
                       for i in range(12)])
    torch.testing.assert_close(res.distance, one, rtol=1e-3, atol=1e-5)
    # 4 classes: 3 candidate gradients per iteration; the pass count matches the iterations run
    iters = res.extra["iterations"]
    assert res.passes == 3 * int(iters.max()) and (iters >= 1).all()


def test_targeted_reaches_the_target():
    target, x, y = toy_image_target(seed=0, n=12)
    goal = Targeted((y + 2) % 4)
    res = registry.create("deepfool").attack(target, x, y, goal=goal)
    assert res.success.float().mean() >= 0.9
    assert torch.equal(res.adv_pred[res.success], ((y + 2) % 4)[res.success])


def test_linf_is_no_larger_in_linf_than_l2_variant():
    # the L∞ variant minimises the L∞ norm of each linearised step; on a linear model its L∞
    # distance is the exact minimum, so the L2 variant's point can be no closer in L∞
    target, x, y = toy_linear_target(seed=2, n_classes=3, n=24)
    li = registry.create("deepfool", norm="inf").attack(target, x, y)
    l2 = registry.create("deepfool", norm=2).attack(target, x, y)
    both = li.success & l2.success
    l2_inf = (l2.x_adv - x).abs().amax(1)
    assert both.float().mean() >= 0.9
    assert (li.distance[both] <= l2_inf[both] * (1 + 1e-5)).all()


@pytest.mark.parametrize("bad", [{"overshoot": -0.1}, {"candidates": 1}, {"max_iter": 0},
                                 {"norm": "l3"}])
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        registry.create("deepfool", **bad)


def test_conformance_linf_variant():
    target, x, y = toy_image_target(seed=0, n=24)
    check_evasion_attack("deepfool", target, x, y, params={"norm": "inf"})


def test_saturated_pixels_do_not_stall_the_iterates():
    # digits images are mostly exactly 0: clipping would absorb much of every unconstrained step,
    # so DeepFool must linearise the clipped iterate to cross the boundary in a few iterations
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    from advkit.targets.base import InputContract
    from advkit.targets.sklearn import SklearnTarget

    xs, ys = load_digits(return_X_y=True)
    xs = xs / 16.0
    est = LogisticRegression(max_iter=300).fit(xs[:1000], ys[:1000])
    target = SklearnTarget(InputContract(shape=(64,), n_classes=10), estimator=est)
    x = torch.tensor(xs[1000:1064], dtype=torch.float32)
    y = torch.tensor(ys[1000:1064])
    correct = target.labels(x) == y
    res = registry.create("deepfool").attack(target, x[correct], y[correct])
    assert ((x[correct] == 0).float().mean(1) > 0.3).all()
    assert res.success.all()
    assert (res.extra["iterations"] <= 5).all()
