"""Universal adversarial perturbations (Moosavi-Dezfooli 2017): one v, its fooling rate held out."""

import math

import numpy as np
import pytest
import torch

from advkit.attacks.evasion.universal import Universal, UniversalPerturbation
from advkit.errors import InvalidParameterError
from advkit.evaluation.metrics import Z95
from advkit.goals import Targeted
from advkit.targets.base import InputContract
from advkit.targets.sklearn import SklearnTarget


@pytest.fixture(scope="module")
def digits():
    """Logistic regression on sklearn's digits (pixels/16): train 1000, the rest for the attack."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    d = load_digits()
    xs, ys = (d.data / 16).astype(np.float32), d.target
    est = LogisticRegression(max_iter=1000).fit(xs[:1000], ys[:1000])
    target = SklearnTarget(InputContract(shape=(64,), n_classes=10), estimator=est)
    return target, torch.tensor(xs[1000:]), torch.tensor(ys[1000:])


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_fitted_perturbation_fools_held_out_points_at_the_claimed_rate(digits):
    target, x, y = digits
    x_fit, y_fit, x_out = x[:100], y[:100], x[100:600]
    uap = Universal(eps=0.3, max_passes=3).fit(target, x_fit, y_fit, generator=_gen())
    claimed, n_fit = uap.fooling_rate, uap.n
    assert uap.v.shape == x.shape[1:] and float(uap.v.abs().max()) <= 0.3 + 1e-6
    # the claim is exactly the fooling rate of v on the fitting data (prediction changes)
    assert uap.fooling_rate_on(target, x_fit).value == pytest.approx(claimed)
    held = uap.fooling_rate_on(target, x_out)
    assert claimed >= 0.3  # a real claim, not a trivial one
    # the two rates estimate the same population rate of a fixed v from independent samples;
    # one-sided 95 % test on their difference (the fitted rate is optimistically selected, so a
    # held-out rate above the claim is always fine)
    se = math.sqrt(claimed * (1 - claimed) / n_fit + held.value * (1 - held.value) / held.n)
    assert held.value >= claimed - Z95 * se, (held, claimed)
    # and v is far better than a random vertex of the same L∞ ball (the paper's baseline)
    noise = (torch.randint(0, 2, uap.v.shape, generator=_gen(3)) * 2 - 1).float() * 0.3
    rnd = UniversalPerturbation(noise, 0.0, 0, (0.0, 1.0), math.inf, 0.3, 0)
    assert held.lo > rnd.fooling_rate_on(target, x_out).hi


def test_attack_adds_one_perturbation_to_every_point(digits):
    lin, x, y = digits
    # the same model seen as 8x8 images: the linear target flattens its inputs
    target = SklearnTarget(InputContract(shape=(1, 8, 8), n_classes=10), estimator=lin.estimator)
    x = x[:40].reshape(-1, 1, 8, 8)
    res = Universal(eps=0.3, max_passes=2).attack(target, x, y[:40], generator=_gen())
    v = res.extra["perturbation"]
    assert v.shape == x.shape[1:]
    assert torch.allclose(res.x_adv, (x + v).clamp(0, 1), atol=1e-6)
    assert float(v.abs().max()) <= 0.3 + 1e-6
    pred_changed = (res.adv_pred != res.clean_pred).float().mean().item()
    assert res.extra["fooling_rate"] == pytest.approx(pred_changed)
    assert res.extra["fooling_rate"] > 0.2


def test_l2_perturbation_stays_in_the_ball(digits):
    target, x, y = digits
    uap = Universal(eps=1.5, norm=2, max_passes=2).fit(target, x[:60], y[:60], generator=_gen())
    assert float(uap.v.norm()) <= 1.5 + 1e-5
    assert uap.fooling_rate > 0


def test_stops_once_the_fooling_rate_reaches_one_minus_delta(digits):
    target, x, y = digits
    early = Universal(eps=0.3, delta=0.9, max_passes=5).fit(target, x[:60], y[:60],
                                                            generator=_gen())
    assert early.fooling_rate >= 0.1 and early.data_passes == 1
    full = Universal(eps=0.02, delta=0.0, max_passes=2).fit(target, x[:40], y[:40],
                                                            generator=_gen())
    assert full.data_passes == 2  # a fooling rate of 1 is out of reach at eps 0.02


def test_deepfool_step_is_the_exact_distance_to_a_linear_boundary():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    xs = rng.uniform(0.3, 0.7, size=(200, 5)).astype(np.float32)
    ys = (xs @ np.arange(1, 6) > 7.5).astype(int)
    target = SklearnTarget(InputContract(shape=(5,), n_classes=2),
                           estimator=LogisticRegression().fit(xs, ys))
    x0 = torch.tensor(xs[:1])
    k0 = int(target.labels(x0)[0])
    att = Universal(norm=2, overshoot=0.02)
    r, _ = att._deepfool(target, x0, k0, None, 2.0, 0.0, 1.0)
    w = target._w[1] - target._w[0]
    f = float(target.logits(x0)[0, 1 - k0] - target.logits(x0)[0, k0])
    dist = abs(f) / float(w.norm())
    assert float(r.norm()) == pytest.approx(1.02 * (dist + 1e-4 / float(w.norm())), rel=1e-4)
    assert int(target.labels((x0 + r).clamp(0, 1))[0]) != k0


def test_targeted_goal_pushes_towards_the_class(digits):
    target, x, y = digits
    keep = y != 3
    uap = Universal(eps=0.3, max_passes=2).fit(target, x[:80][keep[:80]], y[:80][keep[:80]],
                                               goal=Targeted(3), generator=_gen())
    pred = target.labels(uap.apply(x[:80][keep[:80]]))
    assert uap.fooling_rate == pytest.approx((pred == 3).float().mean().item())
    assert uap.fooling_rate > 0.2
    assert uap.fooling.n == int(keep[:80].sum()) and uap.fooling.value == pytest.approx(
        uap.fooling_rate)
    per_sample = Targeted(torch.arange(40) % 10)
    with pytest.raises(InvalidParameterError, match="goal"):
        Universal(eps=0.3, max_passes=1).fit(target, x[:40], y[:40], goal=per_sample)


@pytest.mark.parametrize("bad", [dict(norm=1), dict(delta=1.5), dict(max_passes=0),
                                 dict(steps=0), dict(overshoot=-0.1), dict(eps=-1.0)])
def test_bad_parameters_raise(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        Universal(**bad)
