"""APGD / APGD-T (Croce & Hein 2020): conformance, DLR by hand, checkpoints, strength, cost."""

import pytest
import torch

from advkit.attacks.evasion.apgd import APGD, APGDT, checkpoints, dlr_loss, dlr_targeted_loss
from advkit.attacks.evasion.pgd import PGD
from advkit.errors import InvalidParameterError
from advkit.goals import Targeted
from advkit.testing import check_evasion_attack, toy_image_target


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=0, n=64)


@pytest.mark.parametrize("name,params", [
    ("apgd", {"eps": 0.3, "norm": 2, "steps": 30}),
    ("apgd", {"eps": 0.25, "loss": "dlr", "steps": 30}),
    ("apgd-t", {"eps": 0.25, "steps": 20, "restarts": 2}),
])
def test_conformance_variants(toy, name, params):
    target, x, y = toy
    check_evasion_attack(name, target, x[:24], y[:24], params=params)


def test_bad_parameters_name_themselves():
    for kw, name in [({"loss": "hinge"}, "loss"), ({"norm": 1}, "norm"), ({"rho": 1.5}, "rho"),
                     ({"momentum": -0.1}, "momentum")]:
        with pytest.raises(InvalidParameterError, match=name):
            APGD(**kw)
    with pytest.raises(InvalidParameterError, match="n_target_classes"):
        APGDT(n_target_classes=0)


def test_dlr_matches_hand_computation():
    z = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 3.0, -2.0, 1.0]])
    # row 0, y=0: -(2 - 1) / (2 - 0.5); row 1, y=2: -(-2 - 3) / (3 - 0)
    torch.testing.assert_close(dlr_loss(z, torch.tensor([0, 2])), torch.tensor([-2 / 3, 5 / 3]))
    # targeted, row 0: y=0, t=3: -(2 - (-1)) / (2 - (0.5 - 1) / 2)
    #           row 1: y=1, t=0: -(3 - 0) / (3 - (0 - 2) / 2)
    got = dlr_targeted_loss(z, torch.tensor([0, 1]), torch.tensor([3, 0]))
    torch.testing.assert_close(got, torch.tensor([-3 / 2.25, -3 / 4]))
    # two classes: no third logit, the plain margin
    z2 = torch.tensor([[0.5, 2.0]])
    torch.testing.assert_close(dlr_loss(z2, torch.tensor([0])), torch.tensor([1.5]))


def test_dlr_is_scale_and_shift_invariant():
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(16, 10, generator=g), torch.arange(16) % 10
    torch.testing.assert_close(dlr_loss(3.0 * z + 7.0, y), dlr_loss(z, y))


def test_checkpoints_follow_the_paper():
    # p = 0, .22, .41, .57, .70, .80, .87, .93, .99 (then 1.05 > 1)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [3, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("norm,eps", [("inf", 0.25), (2, 1.5)])
def test_apgd_ce_at_least_as_strong_as_pgd(toy, norm, eps):
    target, x, y = toy
    g = torch.Generator().manual_seed(0)
    pgd = PGD(eps=eps, norm=norm, steps=100).attack(target, x, y, generator=g)
    apgd = APGD(eps=eps, norm=norm, steps=100).attack(target, x, y, generator=g)
    assert (apgd.distance <= eps + 1e-5).all()
    assert apgd.x_adv.min() >= 0 and apgd.x_adv.max() <= 1
    assert 0 < pgd.robust.sum() < 64  # the budget is neither hopeless nor trivial here
    # both start at random; one point of 64 may fall either way by the draw, more may not
    assert apgd.robust.sum() <= pgd.robust.sum() + 1


def test_apgd_t_success_means_misclassified(toy):
    target, x, y = toy
    res = APGDT(eps=0.25, steps=50).attack(target, x, y, generator=torch.Generator().manual_seed(1))
    pred = target.labels(res.x_adv)
    assert torch.equal(res.adv_pred, pred)
    assert torch.equal(res.success, pred != y)
    assert 0 < res.success.sum() < 64
    assert (res.distance <= 0.25 + 1e-5).all()


def test_targeted_goal_success_means_the_target(toy):
    target, x, y = toy
    t = (y + 1) % 4
    for attack in (APGD(eps=0.3, steps=40, loss="dlr"), APGDT(eps=0.3, steps=40)):
        g = torch.Generator().manual_seed(0)
        res = attack.attack(target, x, y, goal=Targeted(t), generator=g)
        assert torch.equal(res.success, target.labels(res.x_adv) == t)
        assert res.success.any()


def test_one_gradient_per_step_and_no_extra_forwards(toy):
    target, x, y = toy
    res = APGD(eps=0.05, steps=30).attack(target, x, y, generator=torch.Generator().manual_seed(0))
    assert res.robust.all()  # nothing leaves the batch early at this tiny eps
    n = x.shape[0]
    assert res.passes == 30 and res.extra["sample_passes"] == 30 * n
    assert res.queries == 30 * n + 2 * n  # + the template's clean and final forwards
    t = APGDT(eps=0.05, steps=20, n_target_classes=2).attack(target, x, y)
    assert t.passes == 40 and t.queries == 40 * n + 2 * n


def test_finished_points_leave_the_batch(toy):
    target, x, y = toy
    res = APGD(eps=0.3, steps=100).attack(target, x, y, generator=torch.Generator().manual_seed(0))
    assert res.success.float().mean() > 0.5
    assert res.extra["sample_passes"] < 100 * x.shape[0]
