"""SimBA (Guo et al. 2019): pixel and DCT bases, breaks tree ensembles from scores, its steps are
orthogonal (norm ε·sqrt(kept steps)), queries are counted exactly and capped."""

import math

import pytest
import torch

from advkit.attacks.evasion.simba import SimBA, dct_matrix, dct_order
from advkit.defenses.output import LabelsOnly
from advkit.errors import IncompatibleTargetError, InvalidParameterError
from advkit.testing import toy_image_target


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("fixture", ["breast_cancer_forest", "breast_cancer_boosting"])
def test_breaks_tree_ensembles_from_scores(fixture, request):
    target, x, y = request.getfixturevalue(fixture)
    q0 = target.queries
    res = SimBA(step=0.2, max_queries=500).attack(target, x, y, generator=_gen())
    # measured 0.69-0.88 over seeds 0-4 for both models (0.75 and 0.875 at seed 0); SimBA stops
    # when the 30 directions of the pixel basis are used up (at most 61 queries a point)
    assert res.success_rate().value >= 0.6
    per_point = res.extra["queries"]
    assert res.queries == target.queries - q0 == int(per_point.sum()) + x.shape[0]
    assert int(per_point.max()) <= 1 + 2 * 30
    trace = res.extra["success_by_query"]
    assert torch.all(trace[1:] >= trace[:-1])
    assert float(trace[-1]) == pytest.approx(res.success_rate().value)
    # each kept step is a distinct coordinate moved by at most 0.2 (clipping can shorten it)
    changed = (res.x_adv != x).sum(1)
    assert torch.all(res.distance <= 0.2 * changed.float().sqrt() + 1e-5)


def test_per_point_cap_and_the_target_budget(breast_cancer_boosting):
    from advkit.targets.sklearn import SklearnTarget

    inner, x, y = breast_cancer_boosting
    res = SimBA(step=0.2, max_queries=10).attack(inner, x, y, generator=_gen())
    assert int(res.extra["queries"].max()) <= 10
    target = SklearnTarget(inner.contract, estimator=inner.estimator, budget=150)
    res = SimBA(step=0.2, max_queries=500).attack(target, x, y, generator=_gen())
    assert "budget_exhausted" in res.extra
    assert target.queries - x.shape[0] == int(res.extra["queries"].sum()) <= 150


def test_needs_scores_not_labels(breast_cancer_boosting):
    inner, x, y = breast_cancer_boosting
    with pytest.raises(IncompatibleTargetError, match="hopskipjump"):
        SimBA().attack(inner.with_output(LabelsOnly()), x, y)


def test_dct_basis_is_orthonormal_and_low_frequencies_come_first():
    m = dct_matrix(8)
    assert torch.allclose(m @ m.T, torch.eye(8), atol=1e-5)
    order = dct_order(1, 8, 8, _gen(), torch.device("cpu"))
    assert sorted(order.tolist()) == list(range(64))
    band = torch.maximum(order // 8, order % 8)
    assert torch.all(band[1:] >= band[:-1])


def test_dct_and_pixel_on_a_torch_cnn():
    target, x, y = toy_image_target(seed=0, n=12)
    out = {}
    for basis in ("pixel", "dct"):
        res = SimBA(step=0.6, basis=basis, max_queries=300).attack(target, x, y,
                                                                  generator=_gen())
        kept = res.distance[res.success] / 0.6
        assert torch.all(kept <= math.sqrt(64) + 1e-4)  # at most the 64 basis directions
        out[basis] = res
    # measured at seed 0: pixel fools 10/12 in 56 queries a point on average, DCT 12/12 in 32.5
    # (the paper's point: low frequencies first is more query-efficient)
    assert out["pixel"].success_rate().value >= 0.6
    assert out["dct"].success_rate().value >= 0.9
    mean_q = {b: float(r.extra["queries"].float().mean()) for b, r in out.items()}
    assert mean_q["dct"] < mean_q["pixel"]


def test_dct_on_tabular_inputs_is_refused(breast_cancer_boosting):
    target, x, y = breast_cancer_boosting
    q0 = target.queries
    with pytest.raises(InvalidParameterError, match="basis.*images"):
        SimBA(basis="dct").attack(target, x, y, generator=_gen())
    assert target.queries == q0  # refused before any query


@pytest.mark.parametrize("bad", [{"step": 0.0}, {"basis": "wavelet"}, {"max_queries": 1}])
def test_bad_parameters_raise_typed_errors(bad):
    with pytest.raises(InvalidParameterError, match=next(iter(bad))):
        SimBA(**bad)
