"""ZOO (Chen et al. 2017): coordinate-wise ZOO-ADAM on scores breaks tree ensembles within a stated
budget, counts its queries exactly, stops at the target's budget, is reproducible with a seed, and
its attack-space and importance-sampling options run on images."""

import pytest
import torch

from advkit.attacks.evasion.zoo import ZOO
from advkit.defenses.output import LabelsOnly
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import toy_image_target

BUDGET = 1000  # score queries per point, the clean pass included
# trees answer piecewise-constant scores: the difference quotient needs a step of the order of
# their split spacing (the paper's h = 1e-4 sees a zero derivative almost everywhere)
TREES = {"h": 0.2, "learning_rate": 0.05}


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fixture", ["breast_cancer_forest", "breast_cancer_boosting"])
def test_breaks_tree_ensembles_within_the_budget(fixture, request):
    target, x, y = request.getfixturevalue(fixture)
    assert not target.capabilities.gradients
    q0 = target.queries
    res = ZOO(max_queries=BUDGET, **TREES).attack(target, x, y, generator=_gen())
    # measured 15/16 points fooled at L2 <= 1 on both models (all 30 coordinates estimated each
    # iteration, so seeds do not change it); with coords=8, 14-15/16 over seeds 0-4
    fooled_within = (res.success & (res.distance <= 1.0)).float().mean()
    assert float(fooled_within) >= 0.8
    per_point = res.extra["queries"]
    assert res.queries == target.queries - q0 == int(per_point.sum()) + x.shape[0]
    assert int(per_point.max()) <= BUDGET
    trace = res.extra["success_by_query"]
    assert trace.shape == (BUDGET,) and torch.all(trace[1:] >= trace[:-1])
    assert float(trace[0]) == 0.0 and float(trace[-1]) == pytest.approx(res.success_rate().value)
    med = res.extra["median_norm_by_query"]
    assert torch.all(med[1:] <= med[:-1])
    # the curve's last value: the (lower) median of the best norms, inf for a point not fooled
    best = torch.where(res.success, res.distance, torch.full_like(res.distance, float("inf")))
    assert float(med[-1]) == pytest.approx(float(best.median()), rel=1e-5)


def test_the_target_budget_stops_it_with_the_best_so_far(breast_cancer_boosting):
    from advkit.targets.sklearn import SklearnTarget

    inner, x, y = breast_cancer_boosting
    res = ZOO(max_queries=50, **TREES).attack(inner, x, y, generator=_gen())
    assert int(res.extra["queries"].max()) <= 50
    # one iteration asks 16 x 60 difference quotients in one call, then the 16 iterates: the
    # budget runs out in the second iteration's call (the target refuses a call it cannot pay)
    target = SklearnTarget(inner.contract, estimator=inner.estimator, budget=1500)
    res = ZOO(max_queries=BUDGET, **TREES).attack(target, x, y, generator=_gen())
    assert "budget_exhausted" in res.extra
    assert target.queries - x.shape[0] == int(res.extra["queries"].sum()) == 16 + 960 + 16
    assert res.success.any()  # found in the first iteration, kept
    assert torch.all(res.adv_pred[res.success] != y[res.success])


def test_same_seed_same_result_and_the_seed_matters(breast_cancer_forest):
    target, x, y = breast_cancer_forest
    attack = ZOO(max_queries=300, coords=8, importance_sampling=True, **TREES)
    a = attack.attack(target, x, y, generator=_gen(0))
    b = attack.attack(target, x, y, generator=_gen(0))
    c = attack.attack(target, x, y, generator=_gen(1))
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.extra["queries"], b.extra["queries"])
    assert not torch.equal(a.x_adv, c.x_adv)  # 8 of 30 coordinates drawn at random


def test_needs_scores_not_labels(breast_cancer_boosting):
    inner, x, y = breast_cancer_boosting
    with pytest.raises(IncompatibleTargetError, match="hopskipjump"):
        ZOO().attack(inner.with_output(LabelsOnly()), x, y)


def test_on_a_torch_cnn_with_attack_space_and_importance_sampling():
    target, x, y = toy_image_target(seed=0, n=12)
    out = {}
    for name, params in {"full": {}, "attack_size=4": {"attack_size": 4},
                         "importance": {"coords": 16, "importance_sampling": True}}.items():
        res = ZOO(max_queries=2000, **params).attack(target, x, y, generator=_gen())
        assert int(res.extra["queries"].max()) <= 2000
        out[name] = res
    # measured at seed 0: all 12 fooled by each; median L2 2.12 (64 coordinates), 1.84 (a 4 x 4
    # attack space: 16 coordinates, smooth perturbations), 2.11 (16 coordinates a draw)
    for res in out.values():
        assert res.success_rate().value >= 0.9
    # the attack space: 16 coordinates, mapped linearly (bilinear upsampling) onto 64 pixels
    m, up = ZOO(attack_size=4)._space((1, 8, 8))
    basis = up(torch.eye(m))
    assert m == 16 and basis.shape == (16, 64) and int(torch.linalg.matrix_rank(basis)) == 16
    tgt = ZOO(max_queries=2000).attack(target, x, y, goal=Targeted(2), generator=_gen())
    assert torch.all(tgt.adv_pred[tgt.success] == 2)
    assert float(tgt.success[y != 2].float().mean()) >= 0.5


def test_attack_space_on_tabular_inputs_is_refused_before_a_query(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    q0 = target.queries
    with pytest.raises(InvalidParameterError, match="attack_size.*images"):
        ZOO(attack_size=4).attack(target, x, y, generator=_gen())
    assert target.queries == q0


def test_already_wrong_points_cost_one_query_and_stay_put(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    res = ZOO(max_queries=100).attack(target, x, 1 - y, generator=_gen())
    assert torch.all(res.extra["queries"] == 1)
    assert torch.equal(res.x_adv, x)


@pytest.mark.parametrize("bad", [{"max_queries": 3}, {"h": 0.0}, {"learning_rate": -1.0},
                                 {"coords": 0}, {"beta1": 1.0}, {"attack_size": 0},
                                 {"binary_search_steps": 0}, {"const": 0.0}])
def test_bad_parameters_raise_typed_errors(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        ZOO(**bad)
