"""Oracle tests of randomized smoothing (Cohen, Rosenfeld & Kolter 2019)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import beta, binomtest, norm

from advkit.defenses.certify.smoothing import (
    ABSTAIN,
    RandomizedSmoothing,
    certified_accuracy_curve,
    gaussian_augmentation_hook,
    lower_confidence_bound,
)
from advkit.errors import InvalidParameterError
from advkit.evaluation.metrics import is_nonincreasing
from advkit.targets.base import Capabilities, InputContract, Target


class ScriptedTarget(Target):
    """Labels only; answers the i-th query with ``script(i)`` (whatever the input)."""

    def __init__(self, script, n_classes=3, shape=(2,)):
        super().__init__(contract=InputContract(shape=shape, n_classes=n_classes))
        self.script = script
        self.seen = 0

    @property
    def capabilities(self):
        return Capabilities(labels=True)

    def _forward(self, x):
        idx = torch.arange(self.seen, self.seen + x.shape[0])
        self.seen += x.shape[0]
        labels = torch.tensor([self.script(int(i)) for i in idx])
        return torch.nn.functional.one_hot(labels, self.contract.n_classes).float()


class HalfPlaneTarget(Target):
    """Class 1 where w.x > b (w of unit norm), else class 0: the smoothed classifier's pA is
    Phi(|w.x - b| / sigma), so its exact certified radius is the distance to the line."""

    def __init__(self, w, b):
        super().__init__(contract=InputContract(shape=(2,), n_classes=2, bounds=(-5.0, 5.0)),
                         batch_size=4096)
        self.w, self.b = w / w.norm(), b

    @property
    def capabilities(self):
        return Capabilities(labels=True)

    def _forward(self, x):
        return torch.nn.functional.one_hot((x @ self.w > self.b).long(), 2).float()


def test_all_samples_on_top_class_give_the_closed_form_radius():
    rs = RandomizedSmoothing(sigma=0.25, n0=100, n=1000, alpha=0.001, batch_size=128)
    res = rs.certify(ScriptedTarget(lambda i: 2), torch.zeros(1, 2),
                     generator=torch.Generator().manual_seed(0))
    expected = 0.25 * norm.ppf(0.001 ** (1 / 1000))
    assert int(res.prediction[0]) == 2
    assert res.pA_lower[0].item() == pytest.approx(0.001 ** (1 / 1000), rel=1e-12)
    assert res.radius[0].item() == pytest.approx(expected, rel=1e-9)
    assert rs.max_radius() == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("n_top", [0, 480, 500, 530, 560, 600, 900, 1000])
def test_certify_abstains_exactly_below_one_half(n_top):
    # selection draws (n0 = 10) all say class 1; of the n = 1000 estimation draws, n_top say 1
    n0, n = 10, 1000

    def script(i):
        return 1 if i < n0 or (i - n0) < n_top else 0

    rs = RandomizedSmoothing(sigma=0.5, n0=n0, n=n, alpha=0.001, batch_size=64)
    target = ScriptedTarget(script)
    res = rs.certify(target, torch.zeros(1, 2), generator=torch.Generator().manual_seed(1))
    p_low = beta.ppf(0.001, n_top, n - n_top + 1) if n_top else 0.0
    assert res.pA_lower[0].item() == pytest.approx(p_low, abs=1e-12)
    assert int(res.counts[0, 1]) == n_top
    if p_low < 0.5:
        assert int(res.prediction[0]) == ABSTAIN and bool(res.abstained[0])
    else:
        assert int(res.prediction[0]) == 1
        assert res.radius[0].item() == pytest.approx(0.5 * norm.ppf(p_low), rel=1e-9)
    assert res.queries == target.queries == n0 + n


def test_predict_abstains_on_510_vs_490_and_answers_on_a_clear_majority():
    rs = RandomizedSmoothing(sigma=0.25, n=1000, alpha=0.001, batch_size=100)
    close = rs.predict(ScriptedTarget(lambda i: 0 if i < 510 else 1), torch.zeros(1, 2))
    assert close.counts[0].tolist()[:2] == [510, 490]
    assert close.p_value[0].item() == pytest.approx(binomtest(510, 1000, 0.5).pvalue)
    assert int(close.prediction[0]) == ABSTAIN
    clear = rs.predict(ScriptedTarget(lambda i: 0 if i < 600 else 1), torch.zeros(1, 2))
    assert int(clear.prediction[0]) == 0


def test_lower_bound_is_clopper_pearson():
    for k, n in [(0, 10), (3, 10), (10, 10), (700, 1000)]:
        lb = lower_confidence_bound(k, n, 0.01)
        # the one-sided bound: P(Binomial(n, lb) >= k) = alpha
        if 0 < k:
            from scipy.stats import binom
            assert binom.sf(k - 1, n, lb) == pytest.approx(0.01, rel=1e-6)
        else:
            assert lb == 0.0


def test_half_plane_radius_is_sound_and_tight():
    w, b = torch.tensor([3.0, 4.0]), 0.0
    target = HalfPlaneTarget(w, b)
    x = torch.tensor([[0.6, 0.8], [-0.3, -0.4], [0.0, 0.0], [1.2, 1.6]])
    dist = (x @ target.w - b).abs()
    rs = RandomizedSmoothing(sigma=0.5, n0=100, n=20_000, alpha=0.001, batch_size=4096)
    res = rs.certify(target, x, generator=torch.Generator().manual_seed(0))
    truth = (x @ target.w > b).long()
    ok = ~res.abstained
    assert torch.equal(res.prediction[ok], truth[ok])
    # sound: never more than the true distance; tight: within the CP slack for large pA
    assert (res.radius[ok] <= dist[ok].double() + 1e-9).all()
    assert res.radius[0].item() > 0.8 * dist[0].item()
    assert bool(res.abstained[2])  # on the line: pA = 1/2
    assert res.queries == 4 * (100 + 20_000)


def test_batched_equals_per_point_and_seeded():
    target = HalfPlaneTarget(torch.tensor([1.0, -1.0]), 0.1)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(3))
    rs = RandomizedSmoothing(sigma=0.3, n0=7, n=50, batch_size=16)
    a = rs.sample_counts(target, x, 50, torch.Generator().manual_seed(9))
    b = rs.sample_counts(target, x, 50, torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and (a.sum(1) == 50).all()
    # the same noise stream, one big batch: identical counts
    big = RandomizedSmoothing(sigma=0.3, n0=7, n=50, batch_size=250)
    c = big.sample_counts(target, x, 50, torch.Generator().manual_seed(9))
    assert torch.equal(a, c)


def test_certified_accuracy_curve_never_rises_and_abstain_is_wrong():
    target = HalfPlaneTarget(torch.tensor([1.0, 0.0]), 0.0)
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(40, 2, generator=g) - 0.5) * 4
    y = (x[:, 0] > 0).long()
    y[:3] = 1 - y[:3]  # three wrong labels: never certified correct
    rs = RandomizedSmoothing(sigma=0.25, n0=20, n=500, batch_size=1000)
    res = rs.certify(target, x, generator=g)
    radii = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0]
    curve = [p.value for p in certified_accuracy_curve(res, y, radii)]
    assert is_nonincreasing(curve)
    correct = (res.prediction == y) & ~res.abstained
    assert curve[0] == pytest.approx(float(correct.float().mean()))
    assert curve[0] <= 37 / 40


def test_gaussian_hook_and_validation():
    hook = gaussian_augmentation_hook(0.25, torch.Generator().manual_seed(0))
    xb, yb = torch.zeros(2000, 3), torch.arange(2000) % 3
    xn, yn = hook(xb, yb, None)
    assert torch.equal(yn, yb) and xn.std().item() == pytest.approx(0.25, rel=0.05)
    for bad in ({"sigma": 0.0}, {"n": 0}, {"alpha": 1.0}, {"batch_size": 0}, {"n0": 1.5}):
        with pytest.raises(InvalidParameterError, match=next(iter(bad))):
            RandomizedSmoothing(**bad)
    assert math.isfinite(RandomizedSmoothing().max_radius())


def test_certify_a_scikit_learn_model_that_answers_labels_only():
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    from advkit.targets.sklearn import SklearnTarget

    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, size=(300, 2))
    ys = (xs[:, 0] > 0.5).astype(int)
    est = DecisionTreeClassifier(max_depth=3, random_state=0).fit(xs, ys)
    target = SklearnTarget(InputContract(shape=(2,), n_classes=2), estimator=est)
    x = torch.tensor([[0.95, 0.5], [0.05, 0.5]], dtype=torch.float32)
    rs = RandomizedSmoothing(sigma=0.1, n0=20, n=400, batch_size=150)
    res = rs.certify(target, x, generator=torch.Generator().manual_seed(0))
    assert res.prediction.tolist() == [1, 0]
    assert (res.radius > 0).all() and (res.radius <= 0.45 + 1e-9).all()
    assert res.queries == target.queries == 2 * 420
