"""BIM (Kurakin 2016): conformance, the FGSM special case, and the paper's default schedule."""

import math

import pytest
import torch

from advkit.attacks.evasion.bim import BIM
from advkit.attacks.evasion.fgsm import FGSM
from advkit.testing import check_evasion_attack, toy_image_target, toy_linear_target


@pytest.fixture(scope="module")
def toy():
    return toy_image_target(seed=1, n=32)


@pytest.mark.parametrize("norm", ["inf", 2, 1])
def test_conformance_all_norms(toy, norm):
    target, x, y = toy
    eps = 0.3 if norm != 1 else 2.0
    check_evasion_attack("bim", target, x, y, params={"eps": eps, "norm": norm})


@pytest.mark.parametrize("norm,eps", [("inf", 0.2), (2, 1.0)])
def test_one_step_of_size_eps_is_fgsm(toy, norm, eps):
    target, x, y = toy
    bim = BIM(eps=eps, norm=norm, steps=1, step_size=eps).attack(target, x, y)
    fgsm = FGSM(eps=eps, norm=norm).attack(target, x, y)
    correct = fgsm.clean_correct
    assert correct.sum() >= 16
    # points already misclassified are frozen at the input (already a success)
    assert torch.equal(bim.x_adv[correct], fgsm.x_adv[correct])
    assert torch.equal(bim.x_adv[~correct], x[~correct])


def test_default_schedule_follows_the_paper():
    # N = min(eps + 4, 1.25 eps) in grey levels, step one grey level (1/255)
    assert BIM(eps=8 / 255).n_steps == 10  # min(12, 10)
    assert BIM(eps=0.3).n_steps == 81  # min(80.5, 95.6) rounded up
    assert BIM(eps=16 / 255).n_steps == 20  # min(20, 20)
    assert BIM(eps=0.1).alpha == pytest.approx(1 / 255)
    l2 = BIM(eps=1.0, norm=2)
    assert l2.n_steps == 10 and l2.alpha == pytest.approx(0.125)
    assert BIM(eps=0.1, steps=7, step_size=0.01).n_steps == 7


def test_iterations_beat_one_step_and_stay_in_ball():
    target, x, y = toy_linear_target(seed=0, n=48)
    eps = 0.08
    one = FGSM(eps=eps).attack(target, x, y)
    it = BIM(eps=eps, steps=20, step_size=eps / 8).attack(target, x, y)
    assert (it.distance <= eps + 1e-6).all()
    assert it.robust.sum() <= one.robust.sum()
    # the freeze keeps every success: points fooled are still fooled in the final scoring
    assert torch.equal(it.success, it.adv_pred != y)


def test_targeted_goal_moves_towards_the_target(toy):
    from advkit.goals import Targeted

    target, x, y = toy
    goal = Targeted(torch.full_like(y, 2))
    res = BIM(eps=0.4, steps=30, step_size=0.02).attack(target, x, y, goal=goal)
    eligible = y != 2
    assert res.success[eligible].float().mean() > 0.5
    assert torch.equal(res.success, res.adv_pred == 2)
    assert math.isfinite(res.seconds)
