"""HopSkipJump (Chen, Jordan & Wainwright 2020): breaks tree ensembles from labels only within a
stated budget, its L2 shrinks as queries grow, queries are counted exactly and capped."""

import math

import pytest
import torch

from advkit.attacks.evasion.deepfool import DeepFool
from advkit.attacks.evasion.hopskipjump import HopSkipJump
from advkit.attacks.evasion.square import Square
from advkit.defenses.output import LabelsOnly
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import toy_image_target

BUDGET = 1000  # label queries per point, the clean pass included


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _broken_within(res, eps):
    return float((res.success & (res.distance <= eps)).float().mean())


def test_breaks_a_random_forest_and_its_l2_shrinks_with_queries(breast_cancer_forest):
    target, x, y = breast_cancer_forest
    assert not target.capabilities.gradients
    res = HopSkipJump(max_queries=BUDGET).attack(target, x, y, generator=_gen())
    # measured 0.81-0.94 over seeds 0-4 (0.88 at seed 0): points fooled at L2 <= 1 in [0, 1]^30
    assert _broken_within(res, 1.0) >= 0.75
    med = res.extra["median_norm_by_query"]
    assert med.shape == (BUDGET,)
    assert torch.all(med[1:] <= med[:-1])  # the best so far never gets worse
    # measured: median L2 0.77 after 50 queries, 0.44 after 1000 (ratio 0.52-0.66, seeds 0-4)
    assert float(med[-1]) <= 0.75 * float(med[49])
    # the curve's last value is the median of the returned points' norms (lower median)
    assert float(med[-1]) == pytest.approx(float(res.distance.median()), rel=1e-5)


def test_breaks_gradient_boosting_at_l2_and_linf(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    res = HopSkipJump(max_queries=BUDGET).attack(target, x, y, generator=_gen())
    assert _broken_within(res, 0.5) >= 0.7  # measured 0.81-0.88 over seeds 0-4
    linf = HopSkipJump(norm="linf", max_queries=BUDGET).attack(target, x, y, generator=_gen())
    assert linf.norm == math.inf
    # measured: 0.69-0.75 of the 16 points broken at Linf <= 0.1 (seeds 0-4)
    assert _broken_within(linf, 0.1) >= 0.6
    assert torch.isfinite(linf.distance).all()


def test_queries_are_exact_and_never_exceed_the_per_point_cap(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    q0 = target.queries
    res = HopSkipJump(max_queries=300).attack(target, x, y, generator=_gen())
    per_point = res.extra["queries"]
    assert res.queries == target.queries - q0
    assert res.queries == int(per_point.sum()) + x.shape[0]  # + the template's scoring pass
    assert int(per_point.max()) <= 300
    trace = res.extra["success_by_query"]
    assert trace.shape == (300,) and torch.all(trace[1:] >= trace[:-1])
    assert float(trace[0]) == 0.0  # every point is classified right before the attack
    assert float(trace[-1]) == pytest.approx(float(res.success.float().mean()))


def test_target_budget_stops_it_cleanly_with_the_best_so_far(breast_cancer_boosting):
    from advkit.targets.sklearn import SklearnTarget

    _, x, y = breast_cancer_boosting
    inner = breast_cancer_boosting[0]
    target = SklearnTarget(inner.contract, estimator=inner.estimator, budget=700)
    res = HopSkipJump(max_queries=BUDGET).attack(target, x, y, generator=_gen())
    assert "budget_exhausted" in res.extra
    attack_queries = target.queries - x.shape[0]  # less the template's scoring pass
    assert attack_queries <= 700
    assert attack_queries == int(res.extra["queries"].sum())
    assert res.success.any()  # points fooled before the budget ran out are kept
    # whatever was returned as fooled really is (the template rescored it)
    assert torch.all(res.adv_pred[res.success] != y[res.success])


def test_runs_on_a_labels_only_target_where_square_cannot(breast_cancer_boosting):
    inner, x, y = breast_cancer_boosting
    target = inner.with_output(LabelsOnly())
    assert target.capabilities.names() == {"labels"}
    with pytest.raises(IncompatibleTargetError):
        Square(eps=0.1).attack(target, x, y)
    res = HopSkipJump(max_queries=BUDGET).attack(target, x, y, generator=_gen())
    assert _broken_within(res, 0.5) >= 0.7
    # labels only: the same answers as on the scoring target, so the same result
    same = HopSkipJump(max_queries=BUDGET).attack(inner, x, y, generator=_gen())
    assert torch.equal(res.x_adv, same.x_adv)


def test_on_a_torch_cnn_untargeted_and_targeted():
    target, x, y = toy_image_target(seed=0, n=12)
    res = HopSkipJump(max_queries=400).attack(target, x, y, generator=_gen())
    assert res.success.all()
    # measured: median L2 2.88 after the start's line search, 1.69 at 400 queries, 1.49 at
    # 3000; white-box DeepFool (gradients) finds 1.46 on these points
    med = res.extra["median_norm_by_query"]
    assert float(med[-1]) <= 0.7 * float(med[100])
    deepfool = DeepFool().attack(target, x, y)
    assert float(res.distance.median()) <= 1.3 * float(deepfool.distance.median())
    tgt = HopSkipJump(max_queries=400).attack(target, x, y, goal=Targeted(2), generator=_gen())
    eligible = y != 2
    assert float(tgt.success[eligible].float().mean()) >= 0.8
    assert torch.all(tgt.adv_pred[tgt.success] == 2)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_without_noise_it_starts_from_another_class_of_the_batch(breast_cancer_boosting, norm):
    target, x, y = breast_cancer_boosting
    assert (y == 0).any() and (y == 1).any()
    res = HopSkipJump(norm=norm, init_tries=0, max_queries=300).attack(target, x, y,
                                                                       generator=_gen())
    assert res.success.all()
    # no noise query: the start is a batch input of the other class, then the binary search
    # (whose end is nearer than that input)
    nearest = torch.cdist(x, x[y != y[0]][:1]).squeeze(1) if norm == "l2" else None
    assert nearest is None or float(res.distance[0]) <= float(nearest[0]) + 1e-6
    assert res.extra["success_by_query"][0] == 1.0  # adversarial as soon as the clean pass ends


def test_already_wrong_points_cost_one_query_and_stay_put(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    res = HopSkipJump(max_queries=100).attack(target, x, 1 - y, generator=_gen())
    assert torch.all(res.extra["queries"] == 1)
    assert torch.equal(res.x_adv, x)


@pytest.mark.parametrize("bad", [{"norm": 1}, {"max_queries": 1}, {"init_evals": 0},
                                 {"init_tries": -1}])
def test_bad_parameters_raise_typed_errors(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        HopSkipJump(**bad)


def test_gradient_estimate_in_chunks_gives_the_same_result(monkeypatch):
    import advkit.attacks.evasion.hopskipjump as hsj

    target, x, y = toy_image_target(seed=0, n=6)
    whole = HopSkipJump(max_queries=250).attack(target, x, y, generator=_gen())
    monkeypatch.setattr(hsj, "_CHUNK", 64 * 100 * 2)  # two points per draw
    chunked = HopSkipJump(max_queries=250).attack(target, x, y, generator=_gen())
    assert torch.equal(whole.x_adv, chunked.x_adv)
    assert torch.equal(whole.extra["queries"], chunked.extra["queries"])
