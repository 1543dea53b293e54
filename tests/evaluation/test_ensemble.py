"""The worst-case ensemble: per-point AND over attacks, marginal contributions, valid examples."""

import pytest
import torch

from advkit.attacks.evasion.apgd import APGD, APGDT
from advkit.errors import InvalidParameterError
from advkit.evaluation.ensemble import run_ensemble
from advkit.testing import toy_image_target

EPS = 0.25


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=0, n=48)


def _attacks():
    return [APGD(eps=EPS, steps=25), APGDT(eps=EPS, steps=15, n_target_classes=2), "fgsm", "bim"]


def _check_examples(target, x, y, res):
    broken = res.clean_correct & ~res.robust
    pred = target.labels(res.x_adv)
    assert (pred[broken] != y[broken]).all()
    assert (pred[res.robust] == y[res.robust]).all()
    assert torch.equal(res.x_adv[res.robust], x[res.robust])
    assert ((res.x_adv - x).abs().flatten(1).amax(1) <= EPS + 1e-6).all()


def test_run_all_worst_case_is_the_and_of_single_attacks(toy):
    target, x, y = toy
    res = run_ensemble(target, x, y, eps=EPS, attacks=_attacks(), version="custom", run_all=True,
                       generator=torch.Generator().manual_seed(0))
    masks = list(res.single_masks.values())
    assert len(masks) == 4
    both = masks[0]
    for m in masks[1:]:
        both = both & m
    assert torch.equal(res.robust, both)
    for stage in res.stages:  # worst case <= every single attack
        assert res.robust_accuracy().k <= stage.single_robust.k
        assert stage.attacked == int(res.clean_correct.sum())
    _check_examples(target, x, y, res)


@pytest.mark.parametrize("run_all", [False, True])
def test_marginals_sum_to_the_points_broken(toy, run_all):
    target, x, y = toy
    res = run_ensemble(target, x, y, eps=EPS, attacks=_attacks(), version="custom", run_all=run_all,
                       generator=torch.Generator().manual_seed(0))
    total = sum(s.broken for s in res.stages)
    assert total == int(res.clean_correct.sum()) - int(res.robust.sum())
    assert total > 0
    assert res.stages[-1].robust_after == res.robust_accuracy()
    assert [s.robust_after.k for s in res.stages] == sorted((s.robust_after.k for s in res.stages),
                                                            reverse=True)
    for i, s in enumerate(res.stages):
        assert s.broken == int((res.broken_by == i).sum())
        assert s.marginal.n == res.n
    _check_examples(target, x, y, res)


def test_cascade_attacks_only_survivors(toy):
    target, x, y = toy
    res = run_ensemble(target, x, y, eps=EPS, attacks=_attacks(), version="custom",
                       generator=torch.Generator().manual_seed(0))
    prev = int(res.clean_correct.sum())
    for s in res.stages:
        assert s.attacked == prev
        prev = s.robust_after.k
    assert [s.label for s in res.stages] == ["apgd-ce", "apgd-t", "fgsm", "bim"]


def test_standard_version_starts_with_apgd_ce_then_apgd_t(toy):
    target, x, y = toy
    res = run_ensemble(target, x[:12], y[:12], eps=EPS, attacks=["fgsm"],
                       generator=torch.Generator().manual_seed(0))
    assert [s.label for s in res.stages] == ["apgd-ce", "apgd-t", "fgsm"]
    assert res.stages[0].params["steps"] == 100 and res.stages[1].params["n_target_classes"] == 9
    assert res.summary()["robust_accuracy"]["k"] == int(res.robust.sum())


def test_minimum_norm_success_counts_only_inside_the_ball(toy):
    target, x, y = toy
    res = run_ensemble(target, x[:16], y[:16], eps=0.01, attacks=["deepfool"], version="custom",
                       run_all=True)
    # DeepFool always crosses the boundary, but almost never within 0.01 in L∞ on this model
    assert res.robust.sum() >= int(res.clean_correct.sum()) - 1
    assert res.stages[0].single_robust.k == int(res.robust.sum())


def test_mismatched_attack_instances_are_refused(toy):
    target, x, y = toy
    with pytest.raises(InvalidParameterError, match="attacks"):
        run_ensemble(target, x, y, eps=EPS, attacks=[APGD(eps=0.5)])
    with pytest.raises(InvalidParameterError, match="attacks"):
        run_ensemble(target, x, y, eps=EPS, attacks=[APGD(eps=EPS, norm=2)])
    with pytest.raises(InvalidParameterError, match="version"):
        run_ensemble(target, x, y, eps=EPS, version="plus")
    with pytest.raises(InvalidParameterError, match="attacks"):
        run_ensemble(target, x, y, eps=EPS, version="custom")
