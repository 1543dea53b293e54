import math

import numpy as np
import pytest
import torch

from advkit.errors import InvalidParameterError
from advkit.evaluation.privacy import (
    clopper_pearson,
    epsilon_lower_bound,
    membership_advantage,
    membership_metrics,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


def test_perfect_separation():
    m, n = np.arange(100, 200.0), np.arange(100.0)
    r = membership_metrics(m, n)
    assert r.auc == 1.0 and r.advantage == 1.0
    assert r.tpr_at[0.01].tpr == 1.0 and r.tpr_at[0.01].fp <= 1 and r.tpr_at[0.001].fp == 0
    assert not r.tpr_at[0.001].resolvable and r.tpr_at[0.01].resolvable
    assert r.to_dict()["tpr_at_fpr"]["0.01"]["tpr"] == 1.0


def test_identical_distributions_auc_half():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=4000), rng.normal(size=4000)
    assert abs(roc_auc(a, b) - 0.5) < 0.03
    assert tpr_at_fpr(a, b, 0.01).tpr < 0.03
    assert membership_advantage(a, b) < 0.05


def test_auc_ties_and_reversal():
    assert roc_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert roc_auc([0.0, 1.0], [0.5]) == 0.5
    assert roc_auc(torch.tensor([0.0]), torch.tensor([1.0])) == 0.0
    roc = roc_curve([2.0, 3.0], [1.0])
    assert roc.fpr[0] == 0 and roc.tpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1


def test_tpr_at_fpr_threshold_fixed_on_nonmembers():
    n = np.arange(100.0)  # FPR 1 % admits exactly one non-member: threshold 99
    m = np.array([98.5, 99.0, 99.5, 10.0])
    r = tpr_at_fpr(m, n, 0.01)
    assert r.threshold == 99.0 and r.fp == 1 and r.tp == 2 and r.tpr == 0.5  # not 98.5
    lo, hi = clopper_pearson(2, 4)
    assert (r.ci_low, r.ci_high) == (float(lo), float(hi))
    # Clopper-Pearson closed forms at k = 0 and k = n
    lo0, hi0 = clopper_pearson(0, 10)
    assert lo0 == 0 and math.isclose(hi0, 1 - 0.025 ** (1 / 10), rel_tol=1e-9)
    lon, hin = clopper_pearson(10, 10)
    assert hin == 1 and math.isclose(lon, 0.025 ** (1 / 10), rel_tol=1e-9)


def test_epsilon_lower_bound_hand_computed():
    # perfect separation, 100 + 100 points: best threshold has FP = FN = 0, and the two-sided
    # 95 % Clopper-Pearson upper bound of 0/100 is 1 - 0.025**(1/100)
    m, n = np.arange(100, 200.0), np.arange(100.0)
    hi = 1 - 0.025 ** (1 / 100)
    want = math.log((1 - 1e-5 - hi) / hi)
    r = epsilon_lower_bound(m, n)
    assert math.isclose(r.epsilon, want, rel_tol=1e-9)
    assert math.isclose(want, 3.2813, abs_tol=1e-3)
    assert math.isclose(r.fpr_high, hi) and math.isclose(r.fnr_high, hi)


def test_epsilon_lower_bound_one_error():
    # 1 false negative of 100, no false positive: at the best threshold FN=1, FP=0
    m = np.concatenate([[-1.0], np.arange(100, 199.0)])
    n = np.arange(100.0)
    fnr_hi = float(clopper_pearson(1, 100)[1])
    fpr_hi = 1 - 0.025 ** (1 / 100)
    want = max(math.log((1 - 1e-5 - fpr_hi) / fnr_hi), math.log((1 - 1e-5 - fnr_hi) / fpr_hi))
    assert math.isclose(epsilon_lower_bound(m, n).epsilon, want, rel_tol=1e-9)


def test_epsilon_lower_bound_chance_is_small():
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, b = rng.uniform(size=500), rng.uniform(size=500)
        # no threshold on chance scores should certify much: well below the perfect-separation
        # bound at this n (log((1 - 0.0074) / 0.0074) ~ 4.9)
        assert epsilon_lower_bound(a, b).epsilon < 0.5


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [float("nan")], [float("inf")]])
def test_bad_scores(bad):
    with pytest.raises(InvalidParameterError, match="member_scores"):
        roc_auc(bad, [1.0])


def test_bad_fpr():
    with pytest.raises(InvalidParameterError, match="fpr"):
        tpr_at_fpr([1.0], [0.0], 0.0)
